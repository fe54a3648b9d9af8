"""The console log through the API: keyset pages that never skip (appends between pages and
concurrent writers), append-if-absent, status updates bumping frame_version, cursors that
cannot be replayed, and drain refusing new dispatches."""

import threading
import time

import pytest
from django.db import connection, transaction

from mobs_app.journal import console_append, console_update
from mobs_app.models import ConsoleFrame, Mob
from tests.support.mobs import MOB_TOML


def _post(api, path, body):
    return api.post(path, data=body, content_type="application/json")


def _desk(api) -> Mob:
    _post(api, "/api/mobs", {"toml": MOB_TOML})
    return Mob.objects.select_related("workspace").get(mob_id="desk")


def _read_all(api, after: str, limit: int) -> tuple[list[int], str]:
    seqs = []
    while True:
        page = api.get(f"/api/mobs/desk/console?after={after}&limit={limit}").json()
        if not page["frames"]:
            return seqs, after
        seqs += [int(f["cursor"].removeprefix("console:")) for f in page["frames"]]
        after = page["next_cursor"]


@pytest.mark.django_db
def test_keyset_pages_never_skip_frames_appended_between_pages(api):
    mob = _desk(api)
    for i in range(5):
        console_append(mob=mob, kind="note", payload={"i": i})
    first = api.get("/api/mobs/desk/console?limit=2").json()
    assert [f["cursor"] for f in first["frames"]] == ["console:1", "console:2"]
    assert (first["next_cursor"], first["latest_cursor"]) == ("console:2", "console:5")
    for i in range(3):
        console_append(mob=mob, kind="note", payload={"i": 5 + i})
    rest, last = _read_all(api, first["next_cursor"], 2)
    assert rest == [3, 4, 5, 6, 7, 8] and last == "console:8"
    assert api.get(f"/api/mobs/desk/console?after={last}").json()["frames"] == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_make_a_reader_skip(api):
    mob = _desk(api)
    done = threading.Event()

    def writer(n: int) -> None:
        try:
            for i in range(12):
                with transaction.atomic():
                    console_append(mob=mob, kind="note", payload={"w": n, "i": i})
                    time.sleep(0.003)  # the seq is taken; commit comes later
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    seen, after = [], "console:0"
    while not done.is_set():
        if not any(t.is_alive() for t in threads):
            done.set()  # one more full read after the writers stop
        page, after = _read_all(api, after, 3)
        seen += page
    assert seen == list(range(1, 25))


@pytest.mark.django_db
def test_append_if_absent_and_status_updates_bump_the_frame_version(api):
    mob = _desk(api)
    frame, created = console_append(mob=mob, kind="send", dedupe_key="k-1", payload={"text": "a"})
    again, created_again = console_append(mob=mob, kind="send", dedupe_key="k-1", payload={"text": "b"})
    assert (created, created_again, again.pk) == (True, False, frame.pk)
    assert Mob.objects.get(pk=mob.pk).console_seq == 1 and ConsoleFrame.objects.count() == 1

    assert console_update(frame=frame, status="dispatching", expect_status="accepted").frame_version == 2
    assert console_update(frame=frame, status="dispatching", expect_status="accepted") is None  # claimed once
    console_update(frame=frame, status="delivered", payload={"note": "ok"})
    shown = api.get("/api/mobs/desk/console").json()["frames"][0]
    assert (shown["status"], shown["frame_version"], shown["payload"]) == ("delivered", 3, {"text": "a", "note": "ok"})


@pytest.mark.django_db
def test_a_cursor_past_the_end_is_409_replay_unavailable_with_the_latest_cursor(api):
    _desk(api)
    ahead = api.get("/api/mobs/desk/console?after=console:7")
    assert ahead.status_code == 409
    assert ahead.json()["error"]["code"] == "replay_unavailable"
    assert ahead.json()["error"]["details"]["latest_cursor"] == "console:0"
    assert api.get("/api/mobs/desk/console?after=nonsense").status_code == 422
    assert api.get("/api/mobs/desk/console?limit=0").status_code == 422


@pytest.mark.django_db
def test_drain_refuses_new_sends_dispatches_and_peer_messages_with_409(api):
    from mobs_app.errors import ShuttingDown
    from mobs_app.messaging import peer_send
    from mobs_app.services import identity_get

    mob = _desk(api)
    _post(api, "/api/mobs/desk/identities", {"key": "lead-1", "profile": "lead"})
    _post(api, "/api/mobs/desk/identities", {"key": "alice", "profile": "specialist"})
    assert _post(api, "/api/mobs/desk/drain", {}).json()["shutting_down"] is True
    for verb, body in (("send", {"text": "hi"}), ("dispatch", {"text": "hi", "origin": "system"})):
        refused = _post(api, f"/api/mobs/desk/identities/alice/{verb}", body)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "shutting_down"
    with pytest.raises(ShuttingDown):
        peer_send(sender=identity_get(mob=mob, key="lead-1"), to="alice", text="hi")
    assert not ConsoleFrame.objects.exists()
    assert "draining" in [e["kind"] for e in api.get("/api/mobs/desk/events").json()["events"]]

    assert _post(api, "/api/mobs/desk/drain", {"shutting_down": False}).json()["shutting_down"] is False
    assert _post(api, "/api/mobs/desk/identities/alice/send", {"text": "hi"}).status_code == 202
