"""/ws/fleet/: authenticated, workspace-scoped, replay after a cursor then live, no gap, no duplicate."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from lashops.asgi import application
from lashops.core.events import publish

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(key: str | None, query: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return WebsocketCommunicator(application, f"/ws/fleet/{query}", headers=headers)


async def _until(comm: WebsocketCommunicator, type_: str) -> dict:
    while True:
        message = await comm.receive_json_from(timeout=3)
        if message["type"] == type_:
            return message


async def test_unauthenticated_socket_is_refused(workspace):
    comm = _socket(None)
    connected, _ = await comm.connect()
    assert not connected


async def test_bad_key_is_refused(workspace):
    connected, _ = await _socket("lsk_bogus_bogus").connect()
    assert not connected


async def test_event_published_by_an_api_call_arrives_live_then_replays_from_a_cursor(api_key, workspace):
    comm = _socket(api_key, "?after=0")
    assert (await comm.connect())[0]
    ready = await _until(comm, "stream.ready")
    start = ready["data"]["latest_cursor"]

    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    response = await sync_to_async(client.post)("/api/keys", data={"name": "ci"}, content_type="application/json")
    assert response.status_code == 201

    created = await _until(comm, "api_key.created")
    assert created["cursor"] == start + 1
    assert created["data"]["name"] == "ci"
    await comm.disconnect()

    again = _socket(api_key, f"?after={start}")
    assert (await again.connect())[0]
    replayed = await again.receive_json_from(timeout=3)
    assert replayed["type"] == "api_key.created" and replayed["cursor"] == created["cursor"]
    assert (await again.receive_json_from(timeout=3))["type"] == "stream.ready"
    await again.disconnect()


async def test_replay_then_live_has_no_gap_and_no_duplicate(api_key, workspace):
    for i in range(3):
        await sync_to_async(publish)(workspace=workspace, type="x.before", data={"i": i})
    comm = _socket(api_key, "?after=0")
    assert (await comm.connect())[0]
    for i in range(2):
        await sync_to_async(publish)(workspace=workspace, type="x.after", data={"i": i})
    seen = []
    while len(seen) < 5:
        message = await comm.receive_json_from(timeout=3)
        if message.get("cursor") is not None:
            seen.append(message["cursor"])
    assert seen == [1, 2, 3, 4, 5]
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_other_workspaces_events_never_reach_the_socket(api_key, workspace, other_workspace):
    comm = _socket(api_key)
    assert (await comm.connect())[0]
    await _until(comm, "stream.ready")
    await sync_to_async(publish)(workspace=other_workspace, type="secret")
    await sync_to_async(publish)(workspace=workspace, type="mine")
    message = await comm.receive_json_from(timeout=3)
    assert message["type"] == "mine"
    await comm.disconnect()


async def test_cursor_past_the_end_is_an_explicit_error(api_key, workspace):
    comm = _socket(api_key, "?after=999")
    assert (await comm.connect())[0]
    message = await comm.receive_json_from(timeout=3)
    assert message["type"] == "stream.error" and message["data"]["code"] == "cursor_ahead"
    await comm.disconnect()


async def test_logged_in_session_user_can_subscribe(workspace, django_user_model):
    user = await sync_to_async(django_user_model.objects.create_user)("ops", password="pw-123456")
    await sync_to_async(workspace.members.add)(user)
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    comm = WebsocketCommunicator(application, "/ws/fleet/", headers=[(b"cookie", cookie)])
    assert (await comm.connect())[0]
    await comm.disconnect()
