"""Behaviour that depends on real concurrency: threads, OS processes, a killed projector."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from mobs_app import services
from mobs_app.continuity import continuity_checkpoint
from mobs_app.errors import StaleFencingToken
from mobs_app.journal import ledger_append, projector_cursor
from mobs_app.messaging import identity_send
from mobs_app.models import ConsoleFrame, Continuity, Identity
from tests.support.mobs import add
from tests.support.polling import wait_until
from tests.workers import ROOT, current_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _env() -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=current_database_url(), LASHOPS_TESTING="1", PYTHONPATH=str(ROOT))


def test_ten_parallel_sends_to_a_dormant_identity_materialize_once_and_deliver_ten(mob, recording_sessions):
    add(mob, "alice")
    recording_sessions.open_delay = 0.3  # keep the materialization window open while sends pile up
    errors: list[Exception] = []

    def send(i: int) -> None:
        try:
            identity_send(mob=mob, key="alice", text=f"message {i}", idempotency_key=f"k{i}")
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    wait_until(lambda: ConsoleFrame.objects.filter(mob=mob, status="delivered").count() == 10, timeout=20.0)
    assert len(recording_sessions.calls["open"]) == 1
    assert sorted(d["text"] for d in recording_sessions.calls["deliver"]) == sorted(f"message {i}" for i in range(10))
    assert Identity.objects.get(mob=mob, key="alice").materializations == 1


@pytest.mark.postgres
def test_two_os_processes_contend_for_one_identity_lease_one_wins_and_the_stale_holder_is_fenced(mob):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    record = Continuity.objects.get(pk=ident.pk)
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "tests/mobs/lease_contender.py", ident.lease_key, holder, str(start_at), "5.0"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for holder in ("runtime-a", "runtime-b")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    winners = [r for r in results if r["acquired"]]
    losers = [r for r in results if not r["acquired"]]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0]["holder"] == winners[0]["holder"]  # already_held names the holder
    stale_token = winners[0]["token"]
    # A 5 s TTL keeps both contenders inside one lease even on a loaded machine; then it must expire.
    from lashops.core.models import Lease

    expires = Lease.objects.get(scope="identity", key=ident.lease_key).expires_at.timestamp()
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    from mobs_app.leases import identity_lease_acquire

    newer = identity_lease_acquire(key=ident.lease_key, holder="runtime-c", ttl=30)
    assert newer.token > stale_token
    kwargs = {"identity": ident, "session_id": record.session_id, "generation": record.generation}
    with pytest.raises(StaleFencingToken):
        continuity_checkpoint(token=stale_token, version=1, **kwargs)
    continuity_checkpoint(token=newer.token, version=1, **kwargs)


def test_projector_killed_mid_stream_resumes_and_misses_nothing(mob, tmp_path):
    for i in range(40):
        ledger_append(mob=mob, kind="probe", data={"i": i})
    latest = type(mob).objects.get(pk=mob.pk).ledger_seq
    output = tmp_path / "projected.txt"
    command = [
        sys.executable,
        "manage.py",
        "lashops_mob",
        "project",
        mob.mob_id,
        "--workspace",
        mob.workspace.slug,
        "--name",
        "audit",
        "--output",
        str(output),
    ]
    proc = subprocess.Popen([*command, "--sleep", "0.1"], cwd=ROOT, env=_env(), start_new_session=True)
    try:
        wait_until(lambda: output.exists() and len(output.read_text().split()) >= 8, timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL  # it really was killed mid-stream
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped_at = projector_cursor(mob=mob, name="audit")
    assert 0 < stopped_at < latest
    subprocess.run(command, cwd=ROOT, env=_env(), check=True, timeout=120, capture_output=True)
    seen = [int(x) for x in output.read_text().split()]
    assert set(seen) == set(range(1, latest + 1))  # nothing skipped (the one in flight may repeat)
    assert len(seen) <= latest + 1
    assert projector_cursor(mob=mob, name="audit") == latest
