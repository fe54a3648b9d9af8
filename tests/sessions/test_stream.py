"""/ws/sessions/{id}/?after=: live deltas, durable events with cursors, replay after a cursor,
workspace scoping, and the retraction of a failed attempt's deltas."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from lashops.asgi import application
from lashops.core import runner
from lashops.core.models import Event
from sessions_app.services import session_open, turn_start
from tests.support.scripted import ANSWER, CALC, scripted

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def quiet_teardown(transactional_db):
    """Let background drives finish, and close the connection sync_to_async's thread opened,
    before the tables are flushed (else PostgreSQL cannot drop the test database)."""
    yield
    await sync_to_async(runner.shutdown)(wait=True)
    await sync_to_async(connections.close_all)()


def _socket(key: str, session_id: str = "s1", query: str = "") -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, f"/ws/sessions/{session_id}/{query}", headers=[(b"authorization", f"Bearer {key}".encode())]
    )


async def _open(workspace, *steps: dict, session_id: str = "s1"):
    session, _ = await sync_to_async(session_open)(workspace=workspace, session_id=session_id, model=scripted(*steps))
    return session


async def _ready(comm: WebsocketCommunicator) -> dict:
    while True:
        message = await comm.receive_json_from(timeout=5)
        if message["type"] == "stream.ready":
            return message


async def _until_committed(comm: WebsocketCommunicator) -> list[dict]:
    seen = []
    while True:
        message = await comm.receive_json_from(timeout=10)
        seen.append(message)
        if message["type"] == "turn.committed":
            return seen


async def test_background_turn_streams_live_deltas_then_durable_events_with_cursors(api_key, workspace):
    session = await _open(workspace, CALC, ANSWER)
    comm = _socket(api_key, query="?after=0")
    assert (await comm.connect())[0]
    await _ready(comm)

    await sync_to_async(turn_start)(session=session, text="What is 6*7?", background=True)
    seen = await _until_committed(comm)
    await comm.disconnect()

    deltas = [m for m in seen if m["type"] == "text.delta"]
    assert "".join(d["data"]["text"] for d in deltas) == "Computing.It is 42."
    assert all(d["live"] is True and d["cursor"] is None for d in deltas)
    durable = [m for m in seen if m["cursor"] is not None]
    types = [m["type"] for m in durable]
    assert types[0] == "turn.started"
    assert types.index("tool_call.started") < types.index("tool_call.completed") < types.index("turn.committed")
    cursors = [m["cursor"] for m in durable]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert seen.index(deltas[-1]) < seen.index(durable[-1])
    # The sink previews tool calls live at once; the committed copies carry cursors and are the truth.
    for type_ in ("tool_call.started", "tool_call.completed"):
        assert [m["data"]["call_id"] for m in durable if m["type"] == type_] == ["call_0_0"]


async def test_reconnect_after_a_cursor_replays_exactly_the_missed_durable_events_once(api_key, workspace):
    session = await _open(workspace, CALC, ANSWER)
    comm = _socket(api_key, query="?after=0")
    assert (await comm.connect())[0]
    await _ready(comm)
    await sync_to_async(turn_start)(session=session, text="What is 6*7?", background=True)
    seen = await _until_committed(comm)
    await comm.disconnect()
    started = next(m for m in seen if m["type"] == "turn.started")
    missed = [m["cursor"] for m in seen if m["cursor"] is not None and m["cursor"] > started["cursor"]]

    again = _socket(api_key, query=f"?after={started['cursor']}")
    assert (await again.connect())[0]
    replayed = []
    while True:
        message = await again.receive_json_from(timeout=5)
        if message["type"] == "stream.ready":
            break
        replayed.append(message)
    assert [m["cursor"] for m in replayed] == missed
    assert all("live" not in m for m in replayed)  # deltas are never stored, so never replayed
    assert replayed[-1]["type"] == "turn.committed"
    assert message["data"]["replayed"] == len(missed)
    assert await again.receive_nothing(timeout=0.3)
    await again.disconnect()


async def test_replay_holds_only_this_sessions_events(api_key, workspace):
    await _open(workspace, {"text": "a"}, session_id="other")
    await _open(workspace, {"text": "b"})
    comm = _socket(api_key, query="?after=0")
    assert (await comm.connect())[0]
    replayed = []
    while (message := await comm.receive_json_from(timeout=5))["type"] != "stream.ready":
        replayed.append(message)
    assert [m["type"] for m in replayed] == ["session.opened"]
    assert replayed[0]["subject"]["session"] == "s1"
    await comm.disconnect()


async def test_socket_for_another_workspaces_session_is_refused(api_key, workspace, other_workspace):
    await _open(other_workspace, {"text": "secret"}, session_id="theirs")
    connected, _ = await _socket(api_key, session_id="theirs").connect()
    assert not connected


async def test_socket_for_a_missing_session_is_refused(api_key, workspace):
    connected, _ = await _socket(api_key, session_id="nope").connect()
    assert not connected


async def test_retried_attempt_sends_attempt_reset_so_the_client_can_retract(api_key, workspace, settings):
    settings.LASHOPS_PROVIDER_RETRY_BASE_DELAY = 0.01
    flaky = {"text": "final answer", "fail_after_text": "partial junk", "fail": [{"status": 500, "message": "boom"}]}
    session = await _open(workspace, flaky)
    comm = _socket(api_key)
    assert (await comm.connect())[0]
    await _ready(comm)

    await sync_to_async(turn_start)(session=session, text="hi", background=True)
    seen = await _until_committed(comm)
    await comm.disconnect()

    live = [m for m in seen if m.get("live")]
    reset = next(m for m in live if m["type"] == "model.attempt_reset")
    failed_id = reset["data"]["correlation_id"]
    assert reset["data"]["reason"] == "attempt_failed" and failed_id.endswith("/attempt-1")
    retracted = [m for m in live if m["type"] == "text.delta" and m["data"]["correlation_id"] == failed_id]
    assert "".join(m["data"]["text"] for m in retracted) == "partial junk"
    assert all(live.index(m) < live.index(reset) for m in retracted)
    kept = [m for m in live if m["type"] == "text.delta" and m["data"]["correlation_id"] != failed_id]
    assert "".join(m["data"]["text"] for m in kept) == "final answer"
    assert seen[-1]["data"]["final_text"] == "final answer"
    # The retracted text never reaches the durable lane (session.opened holds the script itself).
    turn_events = Event.objects.filter(session_id="s1").exclude(type="session.opened")
    stored = await sync_to_async(list)(turn_events.values_list("data", flat=True))
    assert not any("partial junk" in str(data) for data in stored)
