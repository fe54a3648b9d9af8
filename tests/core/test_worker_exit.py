"""Worker health that tells the truth about processes that ended.

A real process that ran work and exited cleanly leaves its row ``stopped`` (not stale); one that was
SIGKILLed is shown ``dead`` at once on its host (by the next read, then marked by the sweep), not
stale after 30 s; and neither stays in the default views (``/api/workers``, the fleet page), which
list them with ``?all=1`` / ``?workers=all``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from lashops.core.models import Event, WorkerHeartbeat
from lashops.core.selectors import worker_report
from lashops.core.services import workers_sweep
from tests.support.polling import wait_until
from tests.workers import ROOT, current_database_url, die_with_parent

pytestmark = pytest.mark.django_db(transaction=True)

# A process that starts its heartbeat (as the in-process runner does on its first task) and waits.
BEATING = """
import os, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
django.setup()
from lashops.core import heartbeat
heartbeat.start(kind="in_process")
print("beating", flush=True)
time.sleep(600)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=current_database_url(),
        LASHOPS_TESTING="1",
        PYTHONPATH=str(ROOT),
        LASHOPS_WORKER_HEARTBEAT="1",
        LASHOPS_WORKER_BEAT_SECONDS="0.2",
        **extra,
    )
    return env


def _row(pid: int) -> WorkerHeartbeat | None:
    return WorkerHeartbeat.objects.filter(pid=pid).first()


def _listed(api, query: str = "") -> dict[int, str]:
    return {w["pid"]: w["health"] for w in api.get(f"/api/workers{query}").json()}


@pytest.fixture
def stale_after_a_minute(settings):
    settings.LASHOPS_WORKER_STALE_SECONDS = 60  # nothing here may pass for stale by waiting


def test_a_command_that_ran_work_and_exited_cleanly_leaves_its_worker_stopped(api, workspace, stale_after_a_minute):
    from mobs_app.services import identities_register, mob_load
    from tests.support.mobs import MOB_TOML

    mob = mob_load(workspace=workspace, source=MOB_TOML).mob
    identities_register(mob=mob, specs=[{"key": f"m{i}", "profile": "specialist"} for i in range(3)])
    args = ["bootstrap", "desk", "--workspace", workspace.slug, "--mode", "lazy_background_warm", "--concurrency", "2"]
    command = subprocess.run(
        [sys.executable, "manage.py", "lashops_mob", *args],
        cwd=ROOT,
        env=_env(LASHOPS_MOB_MEMBER_SESSIONS="tests.mobs.fakes:RecordingMemberSessions"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert command.returncode == 0, command.stdout + command.stderr
    rows = list(WorkerHeartbeat.objects.exclude(pid=os.getpid()))
    assert len(rows) == 1, "the command's in-process runner ran the warm and beat"
    row = rows[0]
    assert row.stopped_at is not None and row.died_at is None
    [reported] = worker_report(workspace=None, include_all=True)
    assert reported["health"] == "stopped"
    assert workers_sweep() == []  # a clean stop is never reported, now or later
    assert row.pid not in _listed(api)
    assert _listed(api, "?all=1")[row.pid] == "stopped"


def test_a_sigkilled_worker_is_dead_at_once_on_its_host_and_leaves_the_default_views(
    api, workspace, stale_after_a_minute, client, django_user_model
):
    proc = subprocess.Popen(
        [sys.executable, "-c", BEATING],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        assert proc.stdout.readline().strip() == "beating"
        wait_until(lambda: _row(proc.pid), timeout=30.0)
        assert _listed(api)[proc.pid] == "healthy"
        proc.send_signal(signal.SIGKILL)
        wait_until(lambda: _row(proc.pid).last_beat_at and _proc_state(proc.pid) in ("Z", None), timeout=30.0)
        # Not reaped yet (a zombie), then reaped: both are a process that is gone.
        assert _listed(api, "?all=1")[proc.pid] == "dead"
        proc.wait(timeout=10)
        assert _listed(api, "?all=1")[proc.pid] == "dead"
        assert proc.pid not in _listed(api)
        row = _row(proc.pid)
        assert (row.stopped_at, row.died_at, row.stale_reported_at) == (None, None, None)

        assert workers_sweep() == [row.worker_id]
        assert workers_sweep() == []  # reported once
        row.refresh_from_db()
        assert row.died_at is not None and row.stale_reported_at is None
        [event] = Event.objects.filter(workspace=workspace, type__startswith="worker.")
        assert event.type == "worker.dead" and event.data["pid"] == proc.pid

        staff = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
        workspace.members.add(staff)
        client.force_login(staff)
        page = client.get("/ops/fleet.json").json()
        assert proc.pid not in [w["pid"] for w in page["workers"]]
        assert page["counts"]["workers"]["dead"] == 1
        assert proc.pid in [w["pid"] for w in client.get("/ops/fleet.json?workers=all").json()["workers"]]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


@pytest.mark.parametrize("lifespan", ["on", "off"])
def test_a_server_restart_leaves_only_the_new_process_listed(api, workspace, stale_after_a_minute, tmp_path, lifespan):
    """uvicorn (the embedded default's in-process driver) stopped with SIGTERM, as a restart does.
    uvicorn ends by raising the signal again, so no exit handler runs: with the ASGI lifespan the
    shutdown marks the row stopped; without it (``--lifespan off``) the row is dead at once on its
    host. Either way the server that replaces it is the only one listed by default."""
    from tests.live.server import AsgiServer

    class Server(AsgiServer):
        def command(self) -> list[str]:
            flags = super().command()
            flags[flags.index("--lifespan") + 1] = lifespan
            return flags

    env = {"LASHOPS_WORKER_HEARTBEAT": "1", "LASHOPS_WORKER_BEAT_SECONDS": "0.2", "LASHOPS_SCHEDULER": "0"}
    first = Server(log_path=tmp_path / "first.log", extra_env=env).start()
    try:
        old = wait_until(lambda: _row(first.proc.pid), timeout=30.0)
        first.stop()
    finally:
        first.kill()
    second = Server(log_path=tmp_path / "second.log", extra_env=env).start()
    try:
        new = wait_until(lambda: _row(second.proc.pid), timeout=30.0)
        old.refresh_from_db()
        expected = "stopped" if lifespan == "on" else "dead"
        assert (old.stopped_at is not None) == (lifespan == "on"), (tmp_path / "first.log").read_text()[-2000:]
        assert _listed(api) == {new.pid: "healthy"}
        assert _listed(api, "?all=1") == {old.pid: expected, new.pid: "healthy"}
    finally:
        second.stop()
