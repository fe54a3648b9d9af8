"""turn_commit: idempotent for the same result, a conflict for another, fenced by the lease
token, refused when the head moved, and cancel-before-commit wins over completion.

Turns are driven for real up to their commit, which is held back (``turn_commit`` is swapped
for a recorder), so each test can commit the genuine arguments under the condition it studies.
"""

from dataclasses import replace
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from lashops.core.models import Effect, Event, Lease
from lashops.core.services import lease_acquire
from sessions_app import services
from sessions_app.errors import CommitConflict, SessionBusy, TurnFinished
from sessions_app.models import Node, PendingInput, Session, Turn, UsageRecord
from tests.support.scripted import ANSWER, CALC

pytestmark = pytest.mark.django_db


class _Held(Exception):
    pass


@pytest.fixture
def ready(open_session, monkeypatch, settings):
    """A background turn admitted and driven to just before its commit: (turn, commit kwargs)."""
    settings.LASHOPS_MAX_CONCURRENT_TOOLS = 1
    real_commit = services.turn_commit
    captured: dict = {}

    def hold(**kwargs):
        captured.update(kwargs)
        raise _Held

    session = open_session(CALC, ANSWER)
    turn = services.turn_start(session=session, text="What is 6*7?", background=True)  # never dispatched: no commit
    monkeypatch.setattr(services.turns, "turn_commit", hold)
    with pytest.raises(_Held):
        services.turn_drive(turn_id=turn.pk)
    monkeypatch.setattr(services.turns, "turn_commit", real_commit)
    return Turn.objects.select_related("session__workspace").get(pk=turn.pk), captured


def _snapshot() -> dict:
    return {
        "nodes": Node.objects.count(),
        "usage": UsageRecord.objects.count(),
        "events": Event.objects.count(),
        "effects": Effect.objects.count(),
        "head": Session.objects.get(pk="s1").head_revision,
    }


def test_retrying_a_commit_with_the_same_result_is_idempotent(ready):
    _, kwargs = ready
    first = services.turn_commit(**kwargs)
    after_first = _snapshot()

    again = services.turn_commit(**kwargs)

    assert again.pk == first.pk and again.status == Turn.Status.COMMITTED
    assert again.commit_digest == first.commit_digest == kwargs["result"].digest()
    assert _snapshot() == after_first
    assert after_first["nodes"] == 5 and after_first["head"] == 1
    assert Event.objects.filter(type="turn.committed").count() == 1


def test_a_different_result_for_a_committed_turn_is_a_commit_conflict(ready):
    turn, kwargs = ready
    services.turn_commit(**kwargs)
    before = _snapshot()
    other = replace(kwargs["result"], final_text="It is 43.")

    with pytest.raises(CommitConflict):
        services.turn_commit(**{**kwargs, "result": other})

    assert _snapshot() == before
    assert Turn.objects.get(pk=turn.pk).final_text == "It is 42."


def test_a_commit_with_a_stale_lease_token_is_refused_and_writes_nothing(ready):
    turn, kwargs = ready
    # The driver stalled past its lease; another driver took the session (token + 1).
    Lease.objects.filter(scope="session", key="s1").update(expires_at=timezone.now() - timedelta(seconds=1))
    newer = lease_acquire(scope="session", key="s1", holder="someone-else", ttl=30)
    assert newer.token == kwargs["token"] + 1
    before = _snapshot()

    with pytest.raises(SessionBusy):
        services.turn_commit(**kwargs)

    assert _snapshot() == before
    stale = Turn.objects.get(pk=turn.pk)
    assert (stale.status, stale.commit_digest) == (Turn.Status.RUNNING, "")
    assert Session.objects.get(pk="s1").active_turn_id == turn.pk  # the lane stays with the turn
    assert Lease.objects.get(scope="session", key="s1").holder == "someone-else"


def test_an_expired_lease_nobody_took_is_refused_too(ready):
    _, kwargs = ready
    Lease.objects.filter(scope="session", key="s1").update(expires_at=timezone.now() - timedelta(seconds=1))
    before = _snapshot()
    with pytest.raises(SessionBusy):
        services.turn_commit(**kwargs)
    assert _snapshot() == before


def test_a_commit_after_the_head_moved_is_a_conflict_and_writes_nothing(ready):
    turn, kwargs = ready
    Session.objects.filter(pk="s1").update(head_revision=F("head_revision") + 1)
    before = _snapshot()

    with pytest.raises(CommitConflict):
        services.turn_commit(**kwargs)

    assert _snapshot() == before
    assert Turn.objects.get(pk=turn.pk).status == Turn.Status.RUNNING


def test_cancel_recorded_before_commit_commits_stopped_with_no_assistant_text(ready):
    turn, kwargs = ready
    assert kwargs["result"].outcome == "finished"  # the model did finish...
    services.turn_cancel(turn=turn)  # ...but cancel landed first

    committed = services.turn_commit(**kwargs)

    assert (committed.outcome, committed.stop_reason, committed.final_text) == ("stopped", "cancelled", "")
    kinds = list(Node.objects.filter(turn=turn).order_by("seq").values_list("kind", flat=True))
    assert kinds == ["user", "system"]
    evidence = Node.objects.get(turn=turn, kind="system")
    assert evidence.payload["stop_reason"] == "cancelled"
    assert Session.objects.get(pk="s1").leaf_node_id == evidence.node_id
    event = Event.objects.get(type="turn.committed")
    assert (event.data["outcome"], event.data["final_text"]) == ("stopped", "")
    assert committed.input_tokens > 0  # the model calls happened and are paid for
    assert Session.objects.get(pk="s1").active_turn_id == ""


def test_cancel_after_commit_does_not_change_the_committed_turn(ready):
    turn, kwargs = ready
    services.turn_commit(**kwargs)
    with pytest.raises(TurnFinished):
        services.turn_cancel(turn=turn)
    assert Turn.objects.get(pk=turn.pk).outcome == "finished"


def test_claimed_but_unaccepted_input_goes_back_to_pending_at_commit(ready):
    turn, kwargs = ready
    # Input claimed at a boundary the result never accepted (e.g. claimed just before the crash),
    # so this commit is a re-drive's: it cannot know what the crashed drive claimed.
    PendingInput.objects.create(session_id="s1", source_key="late", text="late", status="claimed", claimed_by=turn.pk)
    services.turn_commit(**{**kwargs, "inputs_claimed": True})
    row = PendingInput.objects.get(source_key="late")
    assert (row.status, row.claimed_by, row.accepted_by) == ("pending", "", "")
