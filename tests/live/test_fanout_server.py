"""Per-process fan-out on a real server with the Redis channel layer: twenty sockets following one
stream are one member of its Redis group (one copy of each message in Redis, not twenty), every
socket gets every event once, in order, and the membership goes when the last socket leaves."""

import json
import time

import pytest
from websockets.sync.client import connect

from lashops.core import live
from lashops.core.events import processes_group, publish
from tests.live.server import AsgiServer, use_redis_layer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SOCKETS = 20
EVENTS = 50


def _members(redis_url: str, group: str) -> list[bytes]:
    import redis

    return redis.Redis.from_url(redis_url).zrange(f"asgi:group:{group}", 0, -1)


@pytest.mark.parametrize("server_kind", ["uvicorn", "daphne"])
def test_sockets_on_one_stream_share_one_subscription_and_each_get_every_event_once(
    workspace, api_key, redis_url, settings, tmp_path, server_kind
):
    use_redis_layer(settings, redis_url)
    group = processes_group(workspace.pk)
    server = AsgiServer(log_path=tmp_path / "server.log", redis_url=redis_url, server=server_kind).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    sockets = []
    try:
        for _ in range(SOCKETS):
            ws = connect(f"ws://127.0.0.1:{server.port}/ws/processes/", additional_headers=headers)
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.ready"
            sockets.append(ws)
        assert len(_members(redis_url, group)) == 1

        events = [
            publish(workspace=workspace, type="process.tick", subject={"process": "p1"}, data={"i": i})
            for i in range(EVENTS)
        ]
        live.flush()
        for ws in sockets:
            cursors = [json.loads(ws.recv(timeout=10))["cursor"] for _ in range(EVENTS)]
            assert cursors == [e.cursor for e in events]
        for ws in sockets:
            ws.close()
        deadline = time.monotonic() + 10
        while _members(redis_url, group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _members(redis_url, group) == []
    finally:
        for ws in sockets:
            ws.close()
        server.stop()
