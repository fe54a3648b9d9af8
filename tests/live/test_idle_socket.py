"""An idle socket on the Redis channel layer stays open. redis-py 8 reads with a 5 s socket timeout
by default, the same 5 s channels-redis blocks in BZPOPMIN: without a longer timeout the receive
raised ``TimeoutError`` after 5 idle seconds and the server closed the socket with 1011."""

import json
import time

import pytest
from websockets.sync.client import connect

from tests.live.server import AsgiServer, http_json

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("layer", ["redis", "redis_pubsub"])
def test_a_socket_idle_longer_than_the_layers_blocking_read_still_gets_events(
    layer, workspace, api_key, redis_url, tmp_path
):
    server = AsgiServer(
        log_path=tmp_path / "server.log", redis_url=redis_url, extra_env={"LASHOPS_CHANNEL_LAYER": layer}
    ).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with connect(f"ws://127.0.0.1:{server.port}/ws/fleet/", additional_headers=headers) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.ready"
            time.sleep(7)  # longer than BZPOPMIN's 5 s block and redis-py's default 5 s read timeout
            assert http_json("POST", f"{server.url}/api/keys", {"name": "after-idle"}, headers)[0] == 201
            assert json.loads(ws.recv(timeout=10))["type"] == "api_key.created"
    finally:
        server.stop()
    assert "TimeoutError" not in (tmp_path / "server.log").read_text()
