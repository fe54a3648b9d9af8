"""Retention: durable events and console frames are pruned in batches by a configured policy; a
client holding a cursor inside the kept window replays normally, over HTTP and WebSocket, and a
cursor in the pruned range gets an explicit gap, never silence."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.utils import timezone

from lashops.asgi import application
from lashops.core import consumers
from lashops.core.events import publish
from lashops.core.models import Event
from lashops.core.services import events_prune
from mobs_app.journal import console_append, console_frames_prune, console_update
from mobs_app.models import ConsoleFrame
from tests.support.mobs import MOB_TOML

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _teardown(transactional_db, settings):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:RecordingMemberSessions"
    yield
    connections.close_all()


@pytest.fixture
def mob(workspace):
    from mobs_app.services import mob_load

    return mob_load(workspace=workspace, source=MOB_TOML).mob


def _frames(mob, count: int, *, age_days: float = 0, status: str = ConsoleFrame.Status.DELIVERED) -> list:
    frames = [
        console_append(mob=mob, kind="message", identity="lead", payload={"text": f"m{i}"})[0] for i in range(count)
    ]
    for frame in frames:
        if status != ConsoleFrame.Status.ACCEPTED:
            console_update(frame=frame, status=status)
    if age_days:
        then = timezone.now() - timedelta(days=age_days)
        ConsoleFrame.objects.filter(pk__in=[f.pk for f in frames]).update(created_at=then)
        Event.objects.filter(mob_id=str(mob.pk)).update(ts=then)
    return frames


def _socket(key: str, path: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"authorization", f"Bearer {key}".encode())])


async def _until_ready(comm: WebsocketCommunicator) -> list[dict]:
    seen = []
    while True:
        message = await comm.receive_json_from(timeout=5)
        seen.append(message)
        if message["type"] == "stream.ready":
            return seen


# --- console frames -------------------------------------------------------------------------


def test_console_prune_deletes_old_frames_in_batches_and_keeps_young_ones(mob):
    old = _frames(mob, 5, age_days=40)
    young = _frames(mob, 2)
    assert console_frames_prune(older_than_days=30, batch_size=2) == 5
    assert list(ConsoleFrame.objects.filter(mob=mob).values_list("seq", flat=True)) == [f.seq for f in young]
    assert old[-1].seq == 5


def test_console_prune_stops_at_a_frame_still_in_flight(mob):
    _frames(mob, 2, age_days=40)
    _frames(mob, 1, age_days=40, status=ConsoleFrame.Status.ACCEPTED)  # seq 3, never delivered
    _frames(mob, 2, age_days=40)
    assert console_frames_prune(older_than_days=30) == 2
    assert list(ConsoleFrame.objects.filter(mob=mob).values_list("seq", flat=True)) == [3, 4, 5]


def test_console_http_cursor_inside_the_kept_window_pages_normally(api, mob):
    _frames(mob, 4, age_days=40)
    _frames(mob, 3)
    console_frames_prune(older_than_days=30)
    page = api.get(f"/api/mobs/{mob.mob_id}/console?after=console:4").json()
    assert [f["cursor"] for f in page["frames"]] == ["console:5", "console:6", "console:7"]
    assert page["gap"] is False and page["pruned_through"] == "console:4"
    assert page["next_cursor"] == "console:7"


def test_console_http_cursor_in_the_pruned_range_gets_an_explicit_gap(api, mob):
    _frames(mob, 4, age_days=40)
    _frames(mob, 1)
    console_frames_prune(older_than_days=30)
    page = api.get(f"/api/mobs/{mob.mob_id}/console?after=console:2").json()
    assert page["gap"] is True and page["frames"] == []
    assert page["next_cursor"] == "console:4" and page["latest_cursor"] == "console:5"
    resumed = api.get(f"/api/mobs/{mob.mob_id}/console?after={page['next_cursor']}").json()
    assert [f["cursor"] for f in resumed["frames"]] == ["console:5"]


def test_console_http_without_a_cursor_starts_at_the_oldest_kept_frame(api, mob):
    _frames(mob, 3, age_days=40)
    _frames(mob, 1)
    console_frames_prune(older_than_days=30)
    page = api.get(f"/api/mobs/{mob.mob_id}/console").json()
    assert page["gap"] is False and [f["cursor"] for f in page["frames"]] == ["console:4"]


def test_console_prune_runs_on_beat_and_the_in_process_scheduler():
    from lashops import celery_app
    from lashops.core import scheduler

    entry = settings.CELERY_BEAT_SCHEDULE["lashops-mobs-console-prune"]
    assert entry["task"] == "lashops.mobs.console_prune"
    assert ("lashops-mobs-console-prune", "lashops.mobs.console_prune", 3600.0) in scheduler._entries()
    celery_app.loader.import_default_modules()
    assert "lashops.mobs.console_prune" in celery_app.tasks
    assert scheduler.run_due({"lashops-mobs-console-prune": 0.0}, 1.0) == ["lashops-mobs-console-prune"]


# --- WebSocket: events (fleet) and the mob console -----------------------------------------


def _age_events(workspace, count: int) -> list[Event]:
    events = [publish(workspace=workspace, type="old.event", data={"i": i}) for i in range(count)]
    Event.objects.filter(pk__in=[e.pk for e in events]).update(ts=timezone.now() - timedelta(days=40))
    return events


async def test_fleet_socket_cursor_inside_the_kept_window_replays_normally(api_key, workspace):
    await sync_to_async(_age_events)(workspace, 4)
    kept = [await sync_to_async(publish)(workspace=workspace, type="kept", data={"i": i}) for i in range(3)]
    assert await sync_to_async(events_prune)(older_than_days=30) == 4
    comm = _socket(api_key, "/ws/fleet/?after=4")
    assert (await comm.connect())[0]
    seen = await _until_ready(comm)
    assert [m.get("cursor") for m in seen[:-1]] == [e.cursor for e in kept]
    assert not [m for m in seen if m["type"] == "stream.gap"]
    await comm.disconnect()


async def test_fleet_socket_cursor_in_the_pruned_range_gets_a_gap_then_live(api_key, workspace):
    await sync_to_async(_age_events)(workspace, 4)
    await sync_to_async(events_prune)(older_than_days=30)
    comm = _socket(api_key, "/ws/fleet/?after=1")
    assert (await comm.connect())[0]
    seen = await _until_ready(comm)
    assert seen[0]["type"] == "stream.gap"
    assert seen[0]["data"] == {"requested_cursor": 1, "latest_cursor": 4, "reason": "trimmed"}
    await sync_to_async(publish)(workspace=workspace, type="after.gap")
    assert (await comm.receive_json_from(timeout=5))["cursor"] == 5
    await comm.disconnect()


async def test_console_socket_cursor_inside_the_kept_window_replays_frames(api_key, workspace, mob):
    await sync_to_async(_frames)(mob, 3, age_days=40)
    before = await sync_to_async(lambda: Event.objects.filter(workspace=workspace).order_by("-cursor").first())()
    await sync_to_async(_frames)(mob, 2)
    await sync_to_async(events_prune)(older_than_days=30)
    await sync_to_async(console_frames_prune)(older_than_days=30)
    comm = _socket(api_key, f"/ws/mobs/{mob.mob_id}/console/?after={before.cursor}")
    assert (await comm.connect())[0]
    seen = await _until_ready(comm)
    frames = [m["data"]["cursor"] for m in seen if m["type"] == "console.frame"]
    assert frames == ["console:4", "console:5"]
    assert not [m for m in seen if m["type"] == "stream.gap"]
    await comm.disconnect()


async def test_console_socket_cursor_in_the_pruned_range_gets_a_gap(api_key, workspace, mob):
    await sync_to_async(_frames)(mob, 3, age_days=40)
    await sync_to_async(_frames)(mob, 1)
    await sync_to_async(events_prune)(older_than_days=30)
    comm = _socket(api_key, f"/ws/mobs/{mob.mob_id}/console/?after=1")
    assert (await comm.connect())[0]
    seen = await _until_ready(comm)
    assert seen[0]["type"] == "stream.gap" and seen[0]["data"]["reason"] == "trimmed"
    assert seen[0]["data"]["requested_cursor"] == 1
    assert [m["type"] for m in seen[1:]] == ["stream.ready"]  # the kept frame is at or before latest
    await comm.disconnect()


async def test_a_prune_landing_during_replay_is_reported_as_a_gap_not_a_hole(api_key, workspace, monkeypatch):
    """The socket checked its cursor against the mark, then retention deleted the range before the
    replay read it: the reader must notice (the mark moved), not skip the rows silently."""
    await sync_to_async(_age_events)(workspace, 3)
    await sync_to_async(publish)(workspace=workspace, type="kept")
    real = consumers.events_after
    pruned = []

    def prune_then_read(**kwargs):
        if not pruned:
            pruned.append(events_prune(older_than_days=30))
        return real(**kwargs)

    monkeypatch.setattr(consumers, "events_after", prune_then_read)
    comm = _socket(api_key, "/ws/fleet/?after=1")
    assert (await comm.connect())[0]
    seen = await _until_ready(comm)
    assert pruned == [3]
    assert seen[0]["type"] == "stream.gap"
    assert seen[0]["data"]["requested_cursor"] == 1 and seen[0]["data"]["latest_cursor"] == 4
    await comm.disconnect()
