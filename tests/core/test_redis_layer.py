"""The production channel layer: a durable event reaches a fleet socket through channels-redis."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from lashops.asgi import application
from lashops.core.events import publish

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_layer(settings, redis_url):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def test_event_reaches_socket_through_redis(redis_layer, api_key, workspace):
    comm = WebsocketCommunicator(application, "/ws/fleet/", headers=[(b"authorization", f"Bearer {api_key}".encode())])
    assert (await comm.connect())[0]
    assert (await comm.receive_json_from(timeout=3))["type"] == "stream.ready"
    await sync_to_async(publish)(workspace=workspace, type="x.via_redis")
    message = await comm.receive_json_from(timeout=5)
    assert message["type"] == "x.via_redis"
    await comm.disconnect()


def test_health_checks_the_redis_layer(redis_layer, client, db):
    body = client.get("/api/health").json()
    assert body["channel_layer"]["ok"] is True
    assert "RedisChannelLayer" in body["channel_layer"]["detail"]["backend"]
