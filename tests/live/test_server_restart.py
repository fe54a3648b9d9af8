"""Kill -9 the ASGI server while a client is subscribed; on reconnect with its cursor the client
gets every durable event it missed, once, then live events again."""

import json
import time

import pytest
from websockets.sync.client import connect

from lashops.core.events import publish
from tests.live.server import AsgiServer, http_json

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _read_until(ws, predicate, timeout: float = 10.0) -> list[dict]:
    messages, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        messages.append(message)
        if predicate(message):
            return messages
    raise AssertionError(f"not received in time; got {messages}")


@pytest.mark.parametrize("server_kind", ["uvicorn", "daphne"])
def test_reconnecting_after_a_killed_server_replays_every_missed_event_once(
    workspace, api_key, redis_url, tmp_path, server_kind
):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    server = AsgiServer(log_path=tmp_path / "server.log", redis_url=redis_url, server=server_kind).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        ws = connect(f"ws://127.0.0.1:{server.port}/ws/fleet/?after=0", additional_headers=headers)
        _read_until(ws, lambda m: m["type"] == "stream.ready")
        assert http_json("POST", f"{server.url}/api/keys", {"name": "before"}, headers)[0] == 201
        [live] = [m for m in _read_until(ws, lambda m: m["type"] == "api_key.created") if m.get("cursor")]
        cursor = live["cursor"]

        server.kill()
        assert server.proc.poll() is not None  # the server really is gone
        for i in range(7):  # committed while nobody serves the socket
            publish(workspace=workspace, type="missed.while_down", data={"i": i})

        server.start()
        again = connect(f"ws://127.0.0.1:{server.port}/ws/fleet/?after={cursor}", additional_headers=headers)
        replay = _read_until(again, lambda m: m["type"] == "stream.ready")
        cursors = [m["cursor"] for m in replay if m.get("cursor") is not None]
        assert cursors == list(range(cursor + 1, cursor + 8))
        assert [m["type"] for m in replay[:-1]] == ["missed.while_down"] * 7
        assert http_json("POST", f"{server.url}/api/keys", {"name": "after"}, headers)[0] == 201
        after = [m for m in _read_until(again, lambda m: m["type"] == "api_key.created") if m.get("cursor")]
        assert [m["cursor"] for m in after] == [cursor + 8]
        again.close()
    finally:
        server.stop()
