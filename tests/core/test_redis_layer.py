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


def test_a_request_that_publishes_while_redis_is_down_succeeds_and_the_lost_send_is_logged(
    settings, redis_instance, api, workspace, caplog
):
    """The channel layer is down (its Redis stopped with SHUTDOWN NOSAVE): a request whose work
    committed still answers its success; the live send fails later, off the request, and is logged."""
    import logging

    from lashops.core import live
    from lashops.core.models import Event
    from tests.live.server import use_redis_layer

    use_redis_layer(settings, redis_instance.url(0))
    redis_instance.stop()
    assert not redis_instance.ping()
    with caplog.at_level(logging.WARNING, logger="lashops.core.live"):
        response = api.post("/api/keys", {"name": "while-redis-is-down"}, content_type="application/json")
        live.flush(timeout=30)
    assert response.status_code == 201, response.content
    assert Event.objects.filter(workspace=workspace, type="api_key.created").exists()
    assert any("live send to" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
