"""Recovery by disposition, fencing, retention, and session deletion."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from lashops.core.models import Effect, Lease
from processes_app.engine import HOST, claim_one, finish, holder_id
from processes_app.models import Process, ProcessEvent, ProcessGrant
from processes_app.services import (
    process_abandon_request,
    process_session_deleted,
    process_start,
    process_sweep,
    processes_prune,
)

pytestmark = pytest.mark.django_db


def _start(workspace, pid, definition="test.one_step", disposition="rerunnable", **kw):
    proc, _ = process_start(workspace=workspace, process_id=pid, definition=definition, disposition=disposition, **kw)
    return proc


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _crash(pid: str, holder: str) -> None:
    """The state a holder leaves when it dies mid-run: started, lease held but expired."""
    Process.objects.filter(pk=pid).update(first_started_at=timezone.now(), first_started_by=holder)
    Lease.objects.update_or_create(
        scope="process",
        key=pid,
        defaults={"holder": holder, "token": 5, "expires_at": timezone.now() - timedelta(seconds=1)},
    )


def test_a_started_owner_bound_process_with_a_dead_holder_is_abandoned_with_evidence(workspace, drive):
    _start(workspace, "ob", disposition="owner_bound")
    dead = f"{HOST}:{_dead_pid()}:x"
    _crash("ob", dead)
    assert drive() == 0  # never re-run
    assert process_sweep()["abandoned"] == 1
    proc = Process.objects.get(pk="ob")
    assert proc.status == "abandoned"
    assert proc.error["writer"] == "sweep" and proc.error["owner"] == dead
    assert Lease.objects.get(scope="process", key="ob").token == 6  # the revenant is fenced out


def test_a_started_owner_bound_process_with_a_silent_holder_stays_running(workspace, drive):
    _start(workspace, "silent", disposition="owner_bound")
    _crash("silent", "another-host:123:x")
    process_sweep()
    assert drive() == 0
    assert Process.objects.get(pk="silent").status == "running"


def test_an_unstarted_owner_bound_process_runs_once(workspace, drive):
    _start(workspace, "ob2", disposition="owner_bound")
    drive()
    assert Process.objects.get(pk="ob2").status == "completed"


def test_externally_owned_processes_are_never_claimed(workspace, drive):
    proc, _ = process_start(workspace=workspace, process_id="ext", kind="external", disposition="externally_owned")
    assert drive() == 0 and claim_one(process_id="ext") is None
    process_sweep()
    assert Process.objects.get(pk=proc.pk).status == "running"


def test_a_rerunnable_process_with_an_expired_lease_resumes_from_its_journal(workspace, drive):
    proc = _start(workspace, "rr")
    Effect.objects.create(
        workspace=workspace,
        scope="process:rr",
        replay_key="process:rr/step/double/0",
        kind="process.step",
        outcome={"name": "double", "ordinal": 0, "value": 77},
    )
    _crash("rr", f"{HOST}:{_dead_pid()}:x")
    drive()
    proc.refresh_from_db()
    assert proc.status == "completed" and proc.output == {"value": 77}
    assert ProcessEvent.objects.filter(process=proc, type="process.resumed").exists()


def test_a_stale_token_cannot_complete(workspace):
    _start(workspace, "stale")
    claim = claim_one(process_id="stale")
    assert claim is not None
    Lease.objects.filter(scope="process", key="stale").update(expires_at=timezone.now() - timedelta(seconds=1))
    newer = claim_one(process_id="stale")
    assert newer is not None and newer.token > claim.token
    assert finish(claim, "completed", output={"late": True}) == "lease_lost"
    assert Process.objects.get(pk="stale").status == "running"
    assert finish(newer, "completed", output={"ok": True}) == "completed"


def test_an_abandon_request_is_reconciled_only_when_no_live_lease_holds_it(workspace):
    _start(workspace, "ab")
    claim = claim_one(process_id="ab")
    process_abandon_request(workspace=workspace, process_id="ab")
    process_sweep()
    assert Process.objects.get(pk="ab").status == "running"  # a live holder is not pre-empted
    Lease.objects.filter(scope="process", key="ab").update(expires_at=timezone.now() - timedelta(seconds=1))
    process_sweep()
    proc = Process.objects.get(pk="ab")
    assert proc.status == "abandoned" and proc.error["writer"] == "reconciled_request"
    assert finish(claim, "completed") in {"terminal", "lease_lost"}


def test_prune_removes_old_terminal_processes_with_their_logs_and_never_running_ones(workspace, drive):
    _start(workspace, "old")
    _start(workspace, "live", definition="test.sleeper")
    drive()
    Process.objects.update(finished_at=timezone.now() - timedelta(days=30))
    Process.objects.filter(pk="live").update(finished_at=timezone.now() - timedelta(days=30))
    assert processes_prune(older_than_days=7, batch_size=1) == 1
    assert list(Process.objects.values_list("pk", flat=True)) == ["live"]
    assert not ProcessEvent.objects.filter(process_id="old").exists()
    assert not Effect.objects.filter(scope="process:old").exists()


def test_deleting_a_session_revokes_grants_and_reports_orphans_without_cancelling(workspace, drive):
    from sessions_app.services import session_open
    from tests.support.scripted import scripted

    for session_id in ("s1", "s2"):
        session_open(workspace=workspace, session_id=session_id, model=scripted())
    _start(workspace, "only-mine", definition="test.sleeper", grant_session_ids=["s1"])
    _start(workspace, "shared", definition="test.sleeper", grant_session_ids=["s1", "s2"])
    _start(workspace, "woken", definition="test.sleeper", wake_session_id="s1")
    drive()
    report = process_session_deleted(workspace=workspace, session_id="s1")
    assert report["revoked_handle_count"] == 2
    assert report["orphaned_process_ids"] == ["only-mine", "woken"]
    assert report["preserved_process_ids"] == ["shared"]
    assert set(Process.objects.values_list("status", flat=True)) == {"running"}
    assert not ProcessGrant.objects.filter(session_id="s1", revoked_at__isnull=True).exists()
    assert Process.objects.get(pk="woken").wake_session_id == ""


def test_holder_ids_name_this_host_and_pid():
    host, pid, _ = holder_id().split(":")
    assert host == HOST and int(pid) > 0
