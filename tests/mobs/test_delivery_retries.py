"""Console frame delivery retries: a transient failure is retried after an exponential backoff
and delivered once; spent attempts end delivery_failed with a give-up event; a permanent failure
fails at once; the sweep takes over lost dispatches and attempts whose worker died; concurrent
sweepers claim each frame once; operators retry a frame from the admin or the API."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from lashops.core import runner
from lashops.core.models import Event
from mobs_app import messaging, services
from mobs_app.delivery import attempt_failed, console_deliveries_sweep, frame_deliver, retry_delay
from mobs_app.messaging import identity_send
from mobs_app.models import ConsoleFrame, Identity
from tests.mobs import hook_recorder
from tests.support.mobs import MOB_TOML, add

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def flaky(settings, recording_sessions):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:FlakyMemberSessions"
    settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS = 3
    settings.LASHOPS_CONSOLE_RETRY_BASE_SECONDS = 2.0
    settings.LASHOPS_CONSOLE_RETRY_MAX_SECONDS = 300.0
    settings.LASHOPS_CONSOLE_DELIVERY_TIMEOUT = 120.0
    return recording_sessions


@pytest.fixture
def lost_dispatches(monkeypatch):
    """Ingress dispatches that never reach a worker (a lost broker message, a pool shutting down)."""
    lost: list[dict] = []
    monkeypatch.setattr(messaging, "dispatch", lambda task, **kwargs: lost.append(kwargs))
    return lost


def _send(mob, key: str, text: str = "hi") -> ConsoleFrame:
    accepted = identity_send(mob=mob, key=key, text=text)
    runner.drain()
    return ConsoleFrame.objects.get(pk=accepted["frame_id"])


def _sweep_when_due(frame: ConsoleFrame) -> dict[str, int]:
    frame.refresh_from_db()
    outcome = console_deliveries_sweep(now=frame.next_attempt_at + timedelta(milliseconds=1))
    runner.drain()
    frame.refresh_from_db()
    return outcome


def _delivery_events(mob) -> list[tuple[str, dict]]:
    rows = Event.objects.filter(mob_id=str(mob.pk), type__startswith="console.delivery").order_by("cursor")
    return [(e.type, e.data) for e in rows]


def test_the_backoff_doubles_from_the_base_and_is_capped(settings):
    settings.LASHOPS_CONSOLE_RETRY_BASE_SECONDS = 2.0
    settings.LASHOPS_CONSOLE_RETRY_MAX_SECONDS = 10.0
    assert [retry_delay(n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_transient_failure_is_retried_after_a_backoff_and_delivered_exactly_once(mob, flaky):
    add(mob, "alice")
    flaky.fail_deliveries(2)
    frame = _send(mob, "alice")
    assert (frame.status, frame.delivery_attempts) == ("accepted", 1)
    assert frame.last_error == "RuntimeError: member session unavailable"
    first_wait = (frame.next_attempt_at - frame.updated_at).total_seconds()
    assert first_wait == pytest.approx(2.0, abs=0.5)

    early = console_deliveries_sweep(now=frame.next_attempt_at - timedelta(seconds=1))
    assert early == {"timed_out": 0, "redispatched": 0}  # not due yet
    assert _sweep_when_due(frame)["redispatched"] == 1
    assert (frame.status, frame.delivery_attempts) == ("accepted", 2)
    assert (frame.next_attempt_at - frame.updated_at).total_seconds() == pytest.approx(4.0, abs=0.5)

    assert _sweep_when_due(frame)["redispatched"] == 1
    assert (frame.status, frame.delivery_attempts, frame.next_attempt_at) == ("delivered", 3, None)
    assert frame.session_id
    assert len(flaky.calls["deliver_failed"]) == 2 and len(flaky.calls["deliver"]) == 1
    source_keys = {c["source_key"] for c in flaky.calls["deliver"] + flaky.calls["deliver_failed"]}
    assert source_keys == {f"mob:{mob.pk}:{frame.cursor}"}  # one idempotency key for every attempt
    events = _delivery_events(mob)
    assert [(t, d["attempt"]) for t, d in events] == [
        ("console.delivery_retry_scheduled", 1),
        ("console.delivery_retry_scheduled", 2),
    ]
    assert events[0][1]["cursor"] == frame.cursor and events[0][1]["max_attempts"] == 3

    later = console_deliveries_sweep(now=timezone.now() + timedelta(days=1))
    runner.drain()
    assert later == {"timed_out": 0, "redispatched": 0} and len(flaky.calls["deliver"]) == 1


def test_spent_attempts_end_delivery_failed_with_one_give_up_event_and_on_error(mob, flaky, settings):
    settings.LASHOPS_MOB_HOOKS = {"on_error": ["tests.mobs.hook_recorder:on_error"]}
    hook_recorder.calls.clear()
    add(mob, "alice")
    flaky.fail_deliveries(99)
    frame = _send(mob, "alice")
    _sweep_when_due(frame)
    assert hook_recorder.calls == []  # a failure that will be retried is not an error yet
    _sweep_when_due(frame)
    assert (frame.status, frame.delivery_attempts, frame.next_attempt_at) == ("delivery_failed", 3, None)
    assert frame.payload["error"] == frame.last_error == "RuntimeError: member session unavailable"
    events = _delivery_events(mob)
    assert [t for t, _ in events] == ["console.delivery_retry_scheduled"] * 2 + ["console.delivery_gave_up"]
    assert {k: events[-1][1][k] for k in ("attempts", "max_attempts", "permanent")} == {
        "attempts": 3,
        "max_attempts": 3,
        "permanent": False,
    }
    assert hook_recorder.calls == [
        ("on_error", "delivery_failure", "alice", "RuntimeError: member session unavailable")
    ]
    assert console_deliveries_sweep(now=timezone.now() + timedelta(days=1))["redispatched"] == 0
    assert len(flaky.calls["deliver_failed"]) == 3 and flaky.calls["deliver"] == []
    hook_recorder.calls.clear()


@pytest.mark.parametrize("gone", ["retired", "deleted"])
def test_a_permanent_failure_fails_at_once_without_retries(mob, flaky, lost_dispatches, gone):
    identity = add(mob, "alice")
    accepted = identity_send(mob=mob, key="alice", text="hi")
    if gone == "retired":
        services.identity_retire(identity=identity)
    else:
        services.identity_delete(identity=identity)
    frame = frame_deliver(frame_pk=accepted["frame_id"], attempts=0)
    assert (frame.status, frame.delivery_attempts, frame.next_attempt_at) == ("delivery_failed", 1, None)
    expected = "is retired" if gone == "retired" else "has no identity 'alice'"
    assert expected in frame.last_error
    events = _delivery_events(mob)
    assert [t for t, _ in events] == ["console.delivery_gave_up"] and events[0][1]["permanent"] is True
    assert console_deliveries_sweep(now=timezone.now() + timedelta(days=1)) == {"timed_out": 0, "redispatched": 0}
    assert flaky.calls["deliver"] == flaky.calls["deliver_failed"] == []


def test_a_materialization_that_broke_the_identity_is_retried_by_the_next_attempt(mob, flaky):
    add(mob, "alice")
    flaky.fail_for.add("alice")  # opening the member's session fails once
    frame = _send(mob, "alice")
    assert frame.status == "accepted" and "embodiment failed" in frame.last_error
    assert Identity.objects.get(mob=mob, key="alice").state == "broken"
    flaky.fail_for.clear()
    _sweep_when_due(frame)
    assert frame.status == "delivered" and Identity.objects.get(mob=mob, key="alice").state == "active"
    assert len(flaky.calls["deliver"]) == 1


def test_a_lost_dispatch_is_picked_up_by_the_sweep_after_the_delivery_timeout(mob, flaky, lost_dispatches):
    add(mob, "alice")
    accepted = identity_send(mob=mob, key="alice", text="hi")
    frame = ConsoleFrame.objects.get(pk=accepted["frame_id"])
    assert len(lost_dispatches) == 1 and frame.status == "accepted" and frame.delivery_attempts == 0
    assert console_deliveries_sweep(now=timezone.now())["redispatched"] == 0
    assert (frame.next_attempt_at - frame.created_at).total_seconds() == pytest.approx(120, abs=1)
    assert _sweep_when_due(frame)["redispatched"] == 1
    assert (frame.status, frame.delivery_attempts) == ("delivered", 1)
    assert len(flaky.calls["deliver"]) == 1 and _delivery_events(mob) == []


def test_an_attempt_whose_worker_died_is_failed_by_the_sweep_retried_and_its_late_result_fenced(
    mob, flaky, lost_dispatches
):
    add(mob, "alice")
    accepted = identity_send(mob=mob, key="alice", text="hi")
    flaky.fail_deliveries(1, SystemExit("worker killed mid-delivery"))
    with pytest.raises(SystemExit):  # the process dies inside the attempt: nothing records its end
        frame_deliver(frame_pk=accepted["frame_id"], attempts=0)
    frame = ConsoleFrame.objects.get(mob=mob, identity="alice")
    assert (frame.status, frame.delivery_attempts) == ("dispatching", 1)
    dead_token = frame.frame_version
    assert (frame.next_attempt_at - frame.updated_at).total_seconds() == pytest.approx(120, abs=1)

    assert _sweep_when_due(frame) == {"timed_out": 1, "redispatched": 0}
    assert (frame.status, frame.delivery_attempts) == ("accepted", 1)
    assert frame.last_error.startswith("delivery attempt 1 did not finish within 120s")
    late = attempt_failed(frame=frame, token=dead_token, reason="late", permanent=True)
    assert late is None  # the dead attempt's token no longer counts
    assert _sweep_when_due(frame)["redispatched"] == 1
    assert (frame.status, frame.delivery_attempts) == ("delivered", 2) and len(flaky.calls["deliver"]) == 1


def test_concurrent_sweepers_claim_each_due_frame_once_and_each_is_delivered_once(mob, flaky, lost_dispatches):
    from mobs_app import delivery

    for key in ("alice", "bob", "carol"):
        add(mob, key)
        services.identity_materialize(identity=services.identity_get(mob=mob, key=key))
    for i in range(45):
        identity_send(mob=mob, key=("alice", "bob", "carol")[i % 3], text=f"m{i}")
    ConsoleFrame.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))  # long lost
    delivery.SWEEP_BATCH = 10  # several claims per sweeper, interleaved with the others'
    barrier = threading.Barrier(4)
    claimed: list[int] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            barrier.wait()
            for _ in range(6):
                claimed.append(console_deliveries_sweep()["redispatched"])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    try:
        threads = [threading.Thread(target=sweeper) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        delivery.SWEEP_BATCH = 200
    runner.drain()
    assert errors == []
    assert sum(claimed) == 45 and max(claimed) <= 10
    keys = [c["source_key"] for c in flaky.calls["deliver"]]
    assert len(keys) == 45 and len(set(keys)) == 45
    assert set(ConsoleFrame.objects.values_list("status", "delivery_attempts")) == {("delivered", 1)}


def test_two_workers_running_one_frames_delivery_deliver_it_once(mob, flaky, lost_dispatches):
    add(mob, "alice")
    services.identity_materialize(identity=services.identity_get(mob=mob, key="alice"))
    pks = [identity_send(mob=mob, key="alice", text=f"m{i}")["frame_id"] for i in range(10)]
    futures = [runner.run_in_process(_deliver_task(), frame_pk=pk, attempts=0) for pk in pks for _ in range(2)]
    for future in futures:
        future.result(timeout=30)
    assert sorted(c["source_key"] for c in flaky.calls["deliver"]) == sorted(
        f"mob:{mob.pk}:console:{ConsoleFrame.objects.get(pk=pk).seq}" for pk in pks
    )
    assert set(ConsoleFrame.objects.filter(pk__in=pks).values_list("delivery_attempts", flat=True)) == {1}


def _deliver_task():
    from mobs_app.tasks import frame_deliver_task

    return frame_deliver_task


def test_the_delivery_sweep_runs_on_beat_and_the_in_process_scheduler(mob, flaky, lost_dispatches, settings):
    from lashops import celery_app
    from lashops.core import scheduler

    name = "lashops-mobs-console-deliveries-sweep"
    entry = settings.CELERY_BEAT_SCHEDULE[name]
    assert entry == {
        "task": "lashops.mobs.console_deliveries_sweep",
        "schedule": settings.LASHOPS_CONSOLE_SWEEP_SECONDS,
    }
    celery_app.loader.import_default_modules()
    assert "lashops.mobs.console_deliveries_sweep" in celery_app.tasks
    add(mob, "alice")
    accepted = identity_send(mob=mob, key="alice", text="hi")
    ConsoleFrame.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert scheduler.run_due({name: 0.0}, 1.0) == [name]
    runner.drain()
    assert ConsoleFrame.objects.get(pk=accepted["frame_id"]).status == "delivered"
    assert len(flaky.calls["deliver"]) == 1


# --- operators: admin action and API ---------------------------------------------------------


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-123456"))
    return client


def _failed_frame(mob, flaky, settings, key: str = "alice") -> ConsoleFrame:
    settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS = 1
    flaky.fail_deliveries(1)
    frame = _send(mob, key)
    assert frame.status == "delivery_failed"
    return frame


def test_the_admin_retry_now_action_delivers_a_failed_frame_and_reports_what_it_refused(mob, flaky, settings, staff):
    add(mob, "alice")
    failed = _failed_frame(mob, flaky, settings)
    delivered = _send(mob, "alice", text="fine")
    page = staff.post(
        "/admin/mobs_app/consoleframe/",
        {"action": "retry_now", "_selected_action": [failed.pk, delivered.pk]},
        follow=True,
    )
    runner.drain()
    body = page.content.decode()
    assert page.status_code == 200 and "Delivery retried now: 1 frame(s)." in body
    assert f"Frame {delivered.cursor} of mob desk: not_retriable" in body
    failed.refresh_from_db()
    assert (failed.status, failed.delivery_attempts) == ("delivered", 1) and "error" not in failed.payload
    requested = [d for t, d in _delivery_events(mob) if t == "console.delivery_retry_requested"]
    assert requested == [
        {"cursor": failed.cursor, "previous_status": "delivery_failed", "previous_attempts": 1},
    ]
    assert staff.get(f"/admin/mobs_app/consoleframe/{failed.pk}/change/").status_code == 200


def _post(api, path: str):
    return api.post(path, data={}, content_type="application/json")


def test_the_api_retries_one_frame_and_answers_404_409_422_for_the_rest(api, workspace, flaky, settings):
    from mobs_app.journal import console_append

    mob = services.mob_load(workspace=workspace, source=MOB_TOML).mob
    add(mob, "alice")
    add(mob, "bob")
    failed = _failed_frame(mob, flaky, settings)

    retried = _post(api, f"/api/mobs/desk/console/{failed.cursor}/retry")
    assert retried.status_code == 202, retried.content
    assert (retried.json()["status"], retried.json()["delivery_attempts"]) == ("accepted", 0)
    runner.drain()
    shown = api.get("/api/mobs/desk/console").json()["frames"][0]
    assert (shown["status"], shown["delivery_attempts"], shown["next_attempt_at"]) == ("delivered", 1, None)

    again = _post(api, f"/api/mobs/desk/console/{failed.cursor}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_retriable"
    assert again.json()["error"]["details"] == {"status": "delivered"}
    assert _post(api, "/api/mobs/desk/console/console:99/retry").json()["error"]["code"] == "unknown_frame"
    assert _post(api, "/api/mobs/desk/console/console:99/retry").status_code == 404
    assert _post(api, "/api/mobs/desk/console/nonsense/retry").status_code == 422
    assert _post(api, "/api/mobs/nomob/console/console:1/retry").status_code == 404
    note, _ = console_append(mob=mob, kind="note", payload={"text": "fyi"})
    assert _post(api, f"/api/mobs/desk/console/{note.cursor}/retry").json()["error"]["code"] == "not_retriable"

    settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS = 1
    flaky.fail_deliveries(1)
    bobs = _send(mob, "bob")
    services.identity_retire(identity=services.identity_get(mob=mob, key="bob"))
    retired = _post(api, f"/api/mobs/desk/console/{bobs.cursor}/retry")
    assert retired.status_code == 409 and retired.json()["error"]["code"] == "identity_retired"

    ConsoleFrame.objects.filter(pk=failed.pk).update(status="dispatching")
    busy = _post(api, f"/api/mobs/desk/console/{failed.cursor}/retry")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "delivery_in_progress"
