"""Two drivers for one turn (a re-delivered drive task, or the sweep's): the second read the turn
before the first committed it. A committed turn stays committed, the API says so, and the sweep
leaves it alone; a turn already left ``running`` with its commit stamp is repaired, not re-driven.

The interleaving is forced, not hoped for: the second driver runs in this thread, and right after
its first read of the turn row (a ``connection.execute_wrapper`` on this thread's connection only)
the first driver runs the turn to its commit in another thread, with its own connection.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from lashops.core.models import Event, Lease
from sessions_app import services
from sessions_app.errors import TurnFinished
from sessions_app.models import Node, Session, Turn, UsageRecord
from tests.support.scripted import ANSWER, CALC

pytestmark = pytest.mark.django_db(transaction=True)  # two connections: real commits


def _drive_in_thread(turn_id: str) -> dict:
    """The first driver, on its own thread and database connection, to its commit."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["turn"] = services.turn_drive(turn_id=turn_id)
        except Exception as exc:  # reported to the test, which asserts on it
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the first driver did not finish"
    return outcome


class _AfterFirstTurnRead:
    """Run ``action`` once, right after this connection's first SELECT of the turn table."""

    def __init__(self, action) -> None:
        self.action = action
        self.fired = False

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not self.fired and sql.lstrip().upper().startswith("SELECT") and Turn._meta.db_table in sql:
            self.fired = True
            self.action()
        return result


def test_a_second_driver_that_read_the_turn_before_the_first_committed_leaves_it_committed(open_session, api, settings):
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    session = open_session(CALC, ANSWER, session_id="twice")
    with transaction.atomic():  # admitted, never dispatched: only the two drivers below drive it
        turn = services._admit(session, text="What is 6*7?", source_key="", background=True)
    first: dict = {}

    def first_driver_commits() -> None:
        first.update(_drive_in_thread(turn.pk))

    # given: the second driver has read the turn (queued); the first then drives and commits it
    hook = _AfterFirstTurnRead(first_driver_commits)
    with connection.execute_wrapper(hook):
        second = services.turn_drive(turn_id=turn.pk)
    assert hook.fired and "error" not in first, first
    assert first["turn"].status == "committed"

    # then: the second driver did nothing and answered the committed turn
    assert (second.status, second.final_text) == ("committed", "It is 42.")
    stored = Turn.objects.get(pk=turn.pk)
    assert (stored.status, stored.outcome, stored.drive_attempts) == ("committed", "finished", 1)
    assert stored.commit_digest == first["turn"].commit_digest
    assert Session.objects.get(pk="twice").head_revision == 1
    assert Event.objects.filter(type="turn.committed", subject__turn=turn.pk).count() == 1
    assert UsageRecord.objects.filter(turn=turn).count() == 2
    lease = Lease.objects.get(scope="session", key="twice")
    assert lease.holder == ""  # the second driver holds nothing afterwards

    # the API answers committed, and a sweep finds nothing to re-drive
    body = api.get(f"/api/sessions/twice/turns/{turn.pk}").json()
    assert (body["status"], body["final_text"]) == ("committed", "It is 42.")
    assert services.turns_sweep() == []
    assert Turn.objects.get(pk=turn.pk).status == "committed"


def test_a_turn_left_running_after_its_commit_is_repaired_and_never_redriven(open_session, api, settings):
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    session = open_session(CALC, ANSWER, session_id="stuck")
    turn = services.turn_start(session=session, text="What is 6*7?")
    assert turn.status == "committed"
    nodes = Node.objects.filter(turn=turn).count()
    # given: the state the old race left behind: the commit stamp is there, the status says running
    Turn.objects.filter(pk=turn.pk).update(status="running", created_at=timezone.now() - timedelta(minutes=5))

    # then: cancel refuses it, the sweep repairs it instead of re-driving it, a driver returns it
    with pytest.raises(TurnFinished):
        services.turn_cancel(turn=Turn.objects.select_related("session__workspace").get(pk=turn.pk))
    assert services.turns_sweep() == []
    assert Turn.objects.get(pk=turn.pk).status == "committed"
    Turn.objects.filter(pk=turn.pk).update(status="running")
    driven = services.turn_drive(turn_id=turn.pk)
    assert driven.status == "committed"
    assert Turn.objects.get(pk=turn.pk).status == "committed"
    assert api.get(f"/api/sessions/stuck/turns/{turn.pk}").json()["status"] == "committed"
    assert Session.objects.get(pk="stuck").head_revision == 1
    assert Node.objects.filter(turn=turn).count() == nodes
    assert Event.objects.filter(type="turn.committed", subject__turn=turn.pk).count() == 1


@pytest.mark.django_db  # one connection: the sweep's dispatches are captured, never run
def test_the_sweep_does_not_pile_up_drive_messages_for_one_turn(
    open_session, settings, django_capture_on_commit_callbacks
):
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    settings.LASHOPS_TURN_REDISPATCH_SECONDS = 60
    session = open_session({"text": "back"}, session_id="lost")
    with transaction.atomic():  # admitted, but its drive message never arrives
        turn = services._admit(session, text="hello?", source_key="", background=True)

    # when: the sweep runs again before the drive it sent could be picked up
    with django_capture_on_commit_callbacks() as sent:
        assert services.turns_sweep() == [turn.pk]
        assert services.turns_sweep() == []
    assert len(sent) == 1

    # then: once the re-dispatch interval has passed with the turn still not driven, it goes again
    Turn.objects.filter(pk=turn.pk).update(dispatched_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks() as sent:
        assert services.turns_sweep() == [turn.pk]
    assert len(sent) == 1


@pytest.mark.postgres
def test_a_driver_that_arrives_during_the_commit_waits_for_it_and_leaves_the_turn_committed(open_session, settings):
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    session = open_session(CALC, ANSWER, session_id="during")
    with transaction.atomic():
        turn = services._admit(session, text="What is 6*7?", source_key="", background=True)
    second: dict = {}
    threads: list[threading.Thread] = []

    def second_driver() -> None:
        try:
            second["turn"] = services.turn_drive(turn_id=turn.pk)
        except Exception as exc:  # reported to the test, which asserts on it
            second["error"] = exc
        finally:
            connections.close_all()

    def start_second_and_wait_until_it_blocks() -> None:
        threads.append(threading.Thread(target=second_driver))
        threads[0].start()
        with connection.cursor() as cursor:  # this connection's own view of the server
            for _ in range(400):
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # else one snapshot per transaction
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                if cursor.fetchone()[0]:
                    return
                time.sleep(0.025)
        raise AssertionError("the second driver never waited on the first driver's commit")

    # given: the first driver is inside its commit transaction (the lease released, not yet
    # committed) when the second driver reads the turn and tries to take it
    hook = _InCommitAfterLeaseRelease(start_second_and_wait_until_it_blocks)
    with connection.execute_wrapper(hook):
        first = services.turn_drive(turn_id=turn.pk)
    threads[0].join(timeout=60)
    assert hook.fired and first.status == "committed"

    # then: the second driver waited for the commit, found the turn committed and did nothing
    assert "error" not in second, second
    assert second["turn"].status == "committed"
    stored = Turn.objects.get(pk=turn.pk)
    assert (stored.status, stored.drive_attempts, stored.commit_digest) == ("committed", 1, first.commit_digest)
    assert Lease.objects.get(scope="session", key="during").holder == ""
    assert Event.objects.filter(type="turn.committed", subject__turn=turn.pk).count() == 1
    assert services.turns_sweep() == []


class _InCommitAfterLeaseRelease:
    """Run ``action`` once, right after the commit transaction's UPDATE of the session lease."""

    def __init__(self, action) -> None:
        self.action = action
        self.fired = False

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        statement = sql.lstrip().upper()
        if (
            not self.fired
            and statement.startswith("UPDATE")
            and Lease._meta.db_table.upper() in statement
            and context["connection"].in_atomic_block
        ):
            self.fired = True
            self.action()
        return result
