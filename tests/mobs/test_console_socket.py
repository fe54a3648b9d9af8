"""/ws/mobs/{id}/console/?after=: replays the mob's durable events from the cursor, then tails
live ones; another mob's events never reach it."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from lashops.asgi import application
from tests.support.mobs import MOB_TOML

pytestmark = pytest.mark.django_db(transaction=True)


def _socket(key: str, mob_id: str, query: str = "") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode())]
    return WebsocketCommunicator(application, f"/ws/mobs/{mob_id}/console/{query}", headers=headers)


async def _until_ready(comm: WebsocketCommunicator) -> list[dict]:
    seen = []
    while True:
        message = await comm.receive_json_from(timeout=5)
        if message["type"] == "stream.ready":
            return seen
        seen.append(message)


def _setup(workspace):
    from mobs_app.messaging import identity_dispatch
    from mobs_app.services import identity_create, mob_load

    mob = mob_load(workspace=workspace, source=MOB_TOML).mob
    other = mob_load(workspace=workspace, source=MOB_TOML.replace('id = "desk"', 'id = "other"')).mob
    identity_create(mob=other, spec={"key": "noise", "profile": "specialist"})
    identity_create(mob=mob, spec={"key": "alice", "profile": "specialist"})
    identity_dispatch(mob=mob, key="alice", text="first", origin="system")
    return mob


async def test_console_socket_replays_from_the_cursor_then_tails_live(api_key, workspace):
    from mobs_app.messaging import identity_dispatch

    mob = await sync_to_async(_setup)(workspace)
    comm = _socket(api_key, "desk", "?after=0")
    assert (await comm.connect())[0]
    replayed = await _until_ready(comm)
    types = [m["type"] for m in replayed]
    assert types[0] == "mob.definition_loaded" and "identity.registered" in types and "console.frame" in types
    assert all(m["subject"]["mob_id"] == "desk" for m in replayed)  # "other" never shows up
    cursors = [m["cursor"] for m in replayed]
    assert cursors == sorted(set(cursors))

    await sync_to_async(identity_dispatch)(mob=mob, key="alice", text="second", origin="system")
    while True:
        live = await comm.receive_json_from(timeout=5)
        if live["type"] == "console.frame":
            break
    assert live["data"]["payload"]["text"] == "second" and live["cursor"] > cursors[-1]
    await comm.disconnect()

    again = _socket(api_key, "desk", f"?after={cursors[-1]}")
    assert (await again.connect())[0]
    tail = await _until_ready(again)
    assert tail and all(m["cursor"] > cursors[-1] for m in tail)
    assert any(m["type"] == "console.frame" and m["data"]["payload"]["text"] == "second" for m in tail)
    await again.disconnect()


async def test_another_workspaces_mob_socket_is_refused(api_key, other_workspace):
    from mobs_app.services import mob_load

    await sync_to_async(mob_load)(workspace=other_workspace, source=MOB_TOML)
    connected, _ = await _socket(api_key, "desk").connect()
    assert not connected
