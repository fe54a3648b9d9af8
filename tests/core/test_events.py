"""The durable event lane: cursors, same-transaction writes, after-commit live sends, pruning."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from lashops.core.events import EventDraft, publish, publish_many
from lashops.core.models import Event, StreamHead
from lashops.core.services import events_prune

pytestmark = pytest.mark.django_db


def test_cursors_are_monotonic_per_workspace(workspace, other_workspace):
    a = publish_many(workspace=workspace, drafts=[EventDraft("x.one"), EventDraft("x.two")])
    b = publish(workspace=other_workspace, type="x.other")
    c = publish(workspace=workspace, type="x.three")
    assert [e.cursor for e in a] + [c.cursor] == [1, 2, 3]
    assert b.cursor == 1


def test_event_rolls_back_with_the_change_it_describes(workspace):
    with pytest.raises(RuntimeError), transaction.atomic():
        publish(workspace=workspace, type="doomed")
        raise RuntimeError("the change failed")
    assert not Event.objects.filter(type="doomed").exists()
    assert StreamHead.objects.get(workspace=workspace).last_cursor == 0


def test_live_send_happens_only_after_commit(workspace, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        publish(workspace=workspace, type="x.sent", subject={"session": "s1"})
    assert len(callbacks) == 1  # the live send was queued for commit, not sent inline


def test_events_api_pages_by_cursor(api, workspace):
    for i in range(5):
        publish(workspace=workspace, type="x.n", data={"i": i})
    page = api.get("/api/events?after=2&limit=2").json()
    assert [e["cursor"] for e in page["events"]] == [3, 4]
    assert page["next_cursor"] == 4
    assert page["latest_cursor"] == 5
    assert page["events"][0]["workspace"] == workspace.slug


def test_events_api_never_shows_another_workspaces_events(api, other_workspace):
    publish(workspace=other_workspace, type="secret")
    assert api.get("/api/events").json()["events"] == []


def test_prune_deletes_old_events_in_batches_and_marks_the_gap(api, workspace):
    old = publish_many(workspace=workspace, drafts=[EventDraft("old")] * 5)
    Event.objects.filter(pk__in=[e.pk for e in old]).update(ts=timezone.now() - timedelta(days=40))
    kept = publish(workspace=workspace, type="new")
    assert events_prune(older_than_days=30, batch_size=2) == 5
    assert list(Event.objects.values_list("type", flat=True)) == ["new"]
    assert StreamHead.objects.get(workspace=workspace).pruned_through == 5
    gap = api.get("/api/events?after=1").json()
    assert gap["gap"] is True and gap["latest_cursor"] == kept.cursor
    inside = api.get("/api/events?after=5").json()
    assert [e["type"] for e in inside["events"]] == ["new"] and inside["gap"] is False
