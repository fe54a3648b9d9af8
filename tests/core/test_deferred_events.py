"""events.deferred(): a transaction's durable events are written when the block exits, so the
stream-head lock is held only from there to the commit, and cursor order stays commit order."""

import threading

import pytest
from django.db import OperationalError, connection, transaction
from django.db.transaction import TransactionManagementError

from lashops.core import events
from lashops.core.events import EventDraft, deferred, publish, publish_many
from lashops.core.models import Event, StreamHead


def _head(workspace) -> int:
    return StreamHead.objects.filter(workspace=workspace).values_list("last_cursor", flat=True).first() or 0


@pytest.mark.django_db
def test_deferred_events_are_written_when_the_block_exits(workspace):
    with transaction.atomic():
        with deferred():
            first = publish(workspace=workspace, type="x.first")
            rest = publish_many(workspace=workspace, drafts=[EventDraft("x.second"), EventDraft("x.third")])
            # Queued, not written: no cursor taken, no row, the stream head untouched.
            assert first.cursor is None and first.pk is None
            assert not Event.objects.exists() and _head(workspace) == 0
        assert [first.cursor] + [e.cursor for e in rest] == [1, 2, 3]
    assert list(Event.objects.order_by("cursor").values_list("type", flat=True)) == ["x.first", "x.second", "x.third"]


@pytest.mark.django_db
def test_nested_deferred_blocks_write_once_at_the_outermost_exit(workspace):
    with transaction.atomic(), deferred():
        publish(workspace=workspace, type="x.outer")
        with transaction.atomic(), deferred():
            inner = publish(workspace=workspace, type="x.inner")
        assert inner.cursor is None  # the inner block joined the outer one
    assert inner.cursor == 2


@pytest.mark.django_db
def test_deferred_events_of_a_rolled_back_savepoint_are_dropped(workspace):
    with transaction.atomic(), deferred():
        try:
            with transaction.atomic():
                publish(workspace=workspace, type="x.doomed")
                raise RuntimeError("the change failed")
        except RuntimeError:
            pass
        kept = publish(workspace=workspace, type="x.kept")
    assert list(Event.objects.values_list("type", "cursor")) == [("x.kept", 1)]
    assert kept.cursor == 1 and _head(workspace) == 1


@pytest.mark.django_db
def test_a_deferred_block_that_raises_writes_nothing(workspace):
    with pytest.raises(RuntimeError), transaction.atomic(), deferred():
        publish(workspace=workspace, type="x.doomed")
        raise RuntimeError("the change failed")
    assert not Event.objects.exists() and _head(workspace) == 0


@pytest.mark.django_db
def test_deferred_events_leave_live_in_one_send_after_commit(
    workspace, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(events.live, "group_send", lambda group, message: sent.append((group, message)))
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic(), deferred():
        publish(workspace=workspace, type="x.one")
        publish(workspace=workspace, type="x.two")
        assert sent == []
    assert len(sent) == 1  # one message for the fleet group, both events in cursor order
    group, message = sent[0]
    assert group == events.fleet_group(workspace.pk) and message["type"] == "stream.events"
    assert [(e["type"], e["cursor"]) for e in message["events"]] == [("x.one", 1), ("x.two", 2)]


@pytest.mark.django_db(transaction=True)
def test_deferred_needs_a_transaction():
    with pytest.raises(TransactionManagementError), deferred():
        pass


def _publish_with_lock_timeout(workspace, type_: str) -> int:
    """Publish from this thread's own connection; give up if the stream head stays locked."""
    try:
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '300ms'")
            return publish(workspace=workspace, type=type_).cursor
    finally:
        connection.close()


def _in_thread(fn, *args):
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return out


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_stream_head_is_locked_only_from_the_deferred_flush_to_the_commit(workspace):
    StreamHead.objects.get_or_create(workspace=workspace)
    with transaction.atomic():
        with deferred():
            mine = publish(workspace=workspace, type="x.long_transaction")
            # Still inside the body: another connection publishes and commits without waiting.
            during_body = _in_thread(_publish_with_lock_timeout, workspace, "x.during_body")
            assert during_body == {"value": 1}
        # Flushed: the stream head is locked until this transaction commits.
        after_flush = _in_thread(_publish_with_lock_timeout, workspace, "x.after_flush")
        assert isinstance(after_flush.get("error"), OperationalError)
        assert "lock timeout" in str(after_flush["error"])
    after_commit = _in_thread(_publish_with_lock_timeout, workspace, "x.after_commit")
    # Cursor order is commit order: the one that committed during the body came first.
    assert mine.cursor == 2 and after_commit == {"value": 3}
    assert list(Event.objects.order_by("cursor").values_list("type", flat=True)) == [
        "x.during_body",
        "x.long_transaction",
        "x.after_commit",
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_without_deferred_the_stream_head_is_locked_from_the_publish_on(workspace):
    """The contrast that makes the test above mean something."""
    StreamHead.objects.get_or_create(workspace=workspace)
    with transaction.atomic():
        publish(workspace=workspace, type="x.long_transaction")
        during_body = _in_thread(_publish_with_lock_timeout, workspace, "x.during_body")
        assert isinstance(during_body.get("error"), OperationalError)
