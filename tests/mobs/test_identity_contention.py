"""Concurrent identity operations from threads of ONE server process, through the API.

Two request threads of one process are two contenders for the identity lease: exactly one wins,
the others get 409 ``identity_busy``, never a 500, and no member session is left orphaned. The
member sessions are real ``sessions_app`` sessions; only their opening is slowed down (before
the real ``session_open``: ``tests.mobs.slow_sessions``), so the contenders' lease windows
overlap on any machine."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from mobs_app import services
from mobs_app.models import Continuity, Identity, Mob, MobEvent
from tests.mobs import slow_sessions
from tests.support.mobs import MOB_TOML, add

pytestmark = pytest.mark.django_db(transaction=True)

CONTENDERS = 3
RECONCILE_DELAY = 0.3


def slow_post_reconcile(mob, report) -> None:
    """A slow ``post_reconcile`` hook: keeps a retiring member inside its lease window."""
    time.sleep(RECONCILE_DELAY)


@pytest.fixture
def real_sessions(settings, monkeypatch):
    monkeypatch.setenv("LASHOPS_TEST_MEMBER_OPEN_DELAY", "0.3")  # holds the winner inside its lease window
    settings.LASHOPS_MOB_MEMBER_SESSIONS = slow_sessions.PATH


@pytest.fixture
def desk(workspace, real_sessions):
    return services.mob_load(workspace=workspace, source=MOB_TOML).mob


def _at_once(api_key: str, calls: list[tuple[str, str]]) -> list[tuple[str, int, dict]]:
    """Send every (method, path) from its own thread at once; returns (path, status, body) of each."""
    barrier = threading.Barrier(len(calls))
    results: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def call(method: str, path: str) -> None:
        client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {api_key}")
        try:
            barrier.wait(timeout=30)
            response = getattr(client, method)(path, content_type="application/json")
            body = response.json() if response.content else {}
            with lock:
                results.append((path, response.status_code, body))
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=call_args) for call_args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == len(calls), results
    return results


def _contend(api_key: str, path: str) -> list[tuple[int, dict]]:
    """POST ``path`` from ``CONTENDERS`` threads at once; returns (status, body) of each."""
    return [(status, body) for _, status, body in _at_once(api_key, [("post", path)] * CONTENDERS)]


def _losers_are_busy(results: list[tuple[int, dict]]) -> None:
    assert not [r for r in results if r[0] >= 500], results
    for status, body in results:
        if status != 200:
            assert status == 409 and body["error"]["code"] == "identity_busy", (status, body)
            assert body["error"]["details"]["holder"], body


def _member_sessions(mob: Mob, key: str) -> dict[int, str]:
    """generation -> session id of every session ever opened for the identity."""
    from sessions_app.models import Session

    prefix = f"mob{mob.pk}.{hashlib.sha1(key.encode()).hexdigest()[:20]}.g"
    return {
        int(pk.removeprefix(prefix)): pk
        for pk in Session.objects.filter(pk__startswith=prefix).values_list("pk", flat=True)
    }


def _ledger(mob: Mob, kind: str, key: str) -> int:
    return MobEvent.objects.filter(mob=mob, kind=kind, identity=key).count()


def test_concurrent_resets_from_one_process_have_one_winner_and_leave_no_orphan_session(desk, api_key):
    alice = add(desk, "alice")
    services.identity_materialize(identity=alice)
    trials = 6
    for trial in range(trials):
        results = _contend(api_key, "/api/mobs/desk/identities/alice/reset")
        _losers_are_busy(results)
        winners = [body for status, body in results if status == 200]
        assert len(winners) == 1, (trial, results)
        record = Continuity.objects.get(pk=alice.pk)
        assert record.generation == trial + 1 and winners[0]["session_id"] == record.session_id
        # Every session opened is a generation the identity went through: none orphaned.
        assert _member_sessions(desk, "alice") == {
            g: f"mob{desk.pk}.{hashlib.sha1(b'alice').hexdigest()[:20]}.g{g}" for g in range(trial + 2)
        }
    assert _ledger(desk, "member_reset", "alice") == trials


def test_concurrent_reloads_from_one_process_have_one_winner(desk, api_key):
    alice = add(desk, "alice")
    services.identity_materialize(identity=alice)
    trials = 3
    for trial in range(trials):
        results = _contend(api_key, "/api/mobs/desk/identities/alice/reload")
        _losers_are_busy(results)
        assert sum(status == 200 for status, _ in results) == 1, (trial, results)
    assert _ledger(desk, "member_reloaded", "alice") == trials
    assert list(_member_sessions(desk, "alice")) == [0]


def test_concurrent_retires_from_one_process_retire_once(desk, api_key, settings):
    settings.LASHOPS_MOB_HOOKS = {"post_reconcile": ["tests.mobs.test_identity_contention:slow_post_reconcile"]}
    for trial in range(3):
        key = f"r{trial}"
        services.identity_materialize(identity=add(desk, key))
        taken = Mob.objects.get(pk=desk.pk).session_count
        results = _contend(api_key, f"/api/mobs/desk/identities/{key}/retire")
        _losers_are_busy(results)
        retirements = [body for status, body in results if status == 200 and body["fencing_token"] is not None]
        assert len(retirements) == 1, (trial, results)
        # A contender that found the member retiring or retired (before taking the lease, or under
        # it after the winner) changed nothing and says so.
        noops = [body for status, body in results if status == 200 and body["fencing_token"] is None]
        assert all(body["state"] in ("retiring", "retired") for body in noops), results
        assert _ledger(desk, "member_retired", key) == 1
        assert Mob.objects.get(pk=desk.pk).session_count == taken - 1  # capacity released once
        assert Identity.objects.get(mob=desk, key=key).state == "retired"


def test_concurrent_reset_retire_reload_and_delete_never_answer_500(desk, api_key):
    """Mixed operations on one identity: each is answered 2xx, 404 (deleted by a winner) or
    409 ``identity_busy``/an identity state; never a 500; the capacity count stays exact."""
    for trial in range(3):
        key = f"m{trial}"
        services.identity_materialize(identity=add(desk, key))
        calls = [("post", f"/api/mobs/desk/identities/{key}/{op}") for op in ("reset", "reload", "retire")]
        results = _at_once(api_key, [*calls, ("delete", f"/api/mobs/desk/identities/{key}")])
        assert len(results) == 4
        assert not [r for r in results if r[1] >= 500], results
        for path, status, body in results:
            if status == 409:
                assert body["error"]["code"].startswith("identity_"), (path, body)
        live = Identity.objects.filter(mob=desk, state__in=("active", "warming")).count()
        assert Mob.objects.get(pk=desk.pk).session_count == live, results


def test_two_callers_of_one_runtime_instance_are_two_contenders(desk, settings):
    """With ``LASHOPS_MOB_RUNTIME_ID`` set (several processes, or threads, sharing one runtime
    id), each caller is a holder of its own; the holder still names the runtime instance."""
    from mobs_app.errors import IdentityBusy
    from mobs_app.leases import identity_lease_acquire

    settings.LASHOPS_MOB_RUNTIME_ID = "runtime-7"
    alice = add(desk, "alice")
    first = identity_lease_acquire(key=alice.lease_key)
    assert first.holder.startswith("runtime-7:")
    with pytest.raises(IdentityBusy) as busy:
        identity_lease_acquire(key=alice.lease_key)
    assert busy.value.code == "identity_busy" and busy.value.holder == first.holder
