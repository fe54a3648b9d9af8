"""Background warming started by ``manage.py lashops_mob bootstrap`` survives the command.

The real command runs as a subprocess on the test database with the embedded default (in-process
runner) and real member sessions slowed down a little; it is SIGKILLed while it warms. The sweep,
run here, finishes the warm: every member active, none left dormant, none warmed twice."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from lashops.core import runner
from lashops.core.models import Lease
from mobs_app import services
from mobs_app.models import Identity, Mob, MobEvent
from tests.mobs import slow_sessions
from tests.support.mobs import MOB_TOML
from tests.workers import ROOT, current_database_url, die_with_parent

pytestmark = pytest.mark.django_db(transaction=True)

MEMBERS = 12


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=current_database_url(),
        LASHOPS_TESTING="1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        LASHOPS_MOB_MEMBER_SESSIONS=slow_sessions.PATH,
        **extra,
    )
    return env


def bootstrap_command(concurrency: int = 2, **env: str) -> subprocess.Popen:
    args = ["bootstrap", "desk", "--workspace", "acme", "--mode", "lazy_background_warm"]
    return subprocess.Popen(
        [sys.executable, "manage.py", "lashops_mob", *args, "--concurrency", str(concurrency)],
        cwd=ROOT,
        env=command_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=die_with_parent,
    )


@pytest.fixture
def desk(workspace, settings, monkeypatch):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = slow_sessions.PATH
    monkeypatch.setenv("LASHOPS_TEST_MEMBER_OPEN_DELAY", "0")
    mob = services.mob_load(workspace=workspace, source=MOB_TOML).mob
    services.identities_register(mob=mob, specs=[{"key": f"m{i:02}", "profile": "specialist"} for i in range(MEMBERS)])
    return mob


def _states(mob: Mob) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in Identity.objects.filter(mob=mob).values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts


def _member_sessions(mob: Mob) -> dict[str, list[str]]:
    from sessions_app.models import Session

    out = {}
    for key in Identity.objects.filter(mob=mob).values_list("key", flat=True):
        prefix = f"mob{mob.pk}.{hashlib.sha1(key.encode()).hexdigest()[:20]}."
        out[key] = list(Session.objects.filter(pk__startswith=prefix).values_list("pk", flat=True))
    return out


def test_a_warm_whose_command_was_killed_is_finished_by_the_sweep_once_per_member(desk):
    command = bootstrap_command(concurrency=2, LASHOPS_TEST_MEMBER_OPEN_DELAY="0.4")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and command.poll() is None:
            states = _states(desk)
            if states.get("active", 0) >= 1:
                break  # the warm is under way: end the command in the middle of it
            time.sleep(0.05)
        killed = command.poll() is None
        if killed:
            command.send_signal(signal.SIGKILL)
        output = command.communicate(timeout=30)[0]
    finally:
        if command.poll() is None:
            command.kill()
    left = _states(desk)
    # The premise: the command ended (killed, or exited on its own) before the warm was done.
    assert left.get("active", 0) < MEMBERS, (left, output)
    assert Mob.objects.get(pk=desk.pk).warm_requested_at is not None, "the warm request must be on record"

    from mobs_app.warming import mob_warming_sweep

    swept = []
    for _ in range(5):  # a sweep cycle each: recover, dispatch, the runner warms
        swept.append(mob_warming_sweep())
        assert runner.drain(timeout=60)
        if _states(desk) == {"active": MEMBERS}:
            break
    assert _states(desk) == {"active": MEMBERS}, (left, swept, output)
    if killed and left.get("warming"):
        assert swept[0]["recovered"] == left["warming"]  # claims of the dead command went back to dormant
    assert Mob.objects.get(pk=desk.pk).warm_requested_at is None
    # Nobody warmed twice: one materialization, one session, one spawn entry per member.
    assert set(Identity.objects.filter(mob=desk).values_list("materializations", flat=True)) == {1}
    sessions = _member_sessions(desk)
    assert all(len(ids) == 1 and ids[0].endswith(".g0") for ids in sessions.values()), sessions
    spawned = list(MobEvent.objects.filter(mob=desk, kind="member_spawned").values_list("identity", flat=True))
    assert sorted(spawned) == sorted(sessions)
    assert Mob.objects.get(pk=desk.pk).session_count == MEMBERS  # capacity the dead command took is not leaked
    assert not Lease.objects.filter(scope="mob_warm", key=str(desk.pk)).exclude(holder="").exists()


def test_the_bootstrap_command_waits_for_its_warm_with_progress_and_leaves_nothing_to_the_sweep(desk):
    command = bootstrap_command(concurrency=3, LASHOPS_TEST_MEMBER_OPEN_DELAY="0.05")
    output = command.communicate(timeout=120)[0]
    assert command.returncode == 0, output
    assert _states(desk) == {"active": MEMBERS}, output
    assert "warming desk:" in output and f"{MEMBERS} active" in output, output
    assert Mob.objects.get(pk=desk.pk).warm_requested_at is None

    from mobs_app.warming import mob_warming_sweep

    assert mob_warming_sweep() == {"recovered": 0, "dispatched": 0}


def test_a_live_warmer_is_left_alone_and_a_second_warmer_skips(desk):
    """The sweep never starts a second warmer beside a live one, and a warmer that finds the warm
    lease held returns at once."""
    from lashops.core.services import lease_acquire, lease_release
    from mobs_app.warming import mob_warming_sweep

    Mob.objects.filter(pk=desk.pk).update(warm_requested_at=desk.created_at)
    live = lease_acquire(scope="mob_warm", key=str(desk.pk), holder="elsewhere:1:live", ttl=30)
    assert mob_warming_sweep()["dispatched"] == 0
    assert services.mob_warm(mob=desk, concurrency=2) == {"materialized": 0, "failed": 0, "skipped": 1}
    assert _states(desk) == {"dormant": MEMBERS}
    lease_release(scope="mob_warm", key=str(desk.pk), token=live.token)
    assert mob_warming_sweep()["dispatched"] == 1
    assert runner.drain(timeout=60)
    assert _states(desk) == {"active": MEMBERS}


def test_the_warming_sweep_is_on_the_beat_schedule_and_so_on_the_in_process_scheduler():
    from lashops.core.scheduler import _entries

    assert ("lashops-mobs-warming-sweep", "lashops.mobs.warming_sweep") in {
        (name, task) for name, task, _ in _entries()
    }
