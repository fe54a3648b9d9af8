"""Filtered streams across publishing processes: two OS processes publish interleaved durable
events for one session while a socket on a real ASGI server (Redis channel layer) follows it.
One publisher's live sends are held back, so the other's later cursors arrive first; the client
still gets every event exactly once: late lower cursors are delivered, duplicates never."""

import json
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from sessions_app.services import session_open
from tests.live.server import AsgiServer
from tests.workers import ROOT, current_database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PER_PUBLISHER = 60


def _publisher(
    workspace, session_id: str, tag: str, delay_ms: int, layer: str, redis_url: str, log, start_at: float
) -> subprocess.Popen:
    import os

    env = dict(os.environ, DATABASE_URL=current_database_url(), REDIS_URL=redis_url, LASHOPS_CHANNEL_LAYER=layer)
    env["LASHOPS_TESTING"] = "1"
    env.pop("CELERY_BROKER_URL", None)
    args = [workspace.slug, session_id, tag, str(PER_PUBLISHER), str(delay_ms), str(start_at)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.live.publisher", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _follow(port: int, api_key: str):
    ws = connect(
        f"ws://127.0.0.1:{port}/ws/sessions/order-1/?after=0",
        additional_headers={"Authorization": f"Bearer {api_key}"},
    )
    replayed = []
    while (message := json.loads(ws.recv(timeout=10)))["type"] != "stream.ready":
        replayed.append(message)
    return ws, [m for m in replayed if m["type"] == "order.probe"]


def _drain(ws, received: list[dict], deadline: float, until: int = 2 * PER_PUBLISHER) -> None:
    while len(received) < until and time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        assert message["type"] not in ("stream.gap", "stream.error"), message
        if message["type"] == "order.probe":
            received.append(message)


def _check(received: list[dict]) -> None:
    cursors = [m["cursor"] for m in received]
    assert len(cursors) == len(set(cursors)) == 2 * PER_PUBLISHER  # exactly once
    tags = sorted((m["data"]["tag"], m["data"]["i"]) for m in received)
    assert tags == sorted([("slow", i) for i in range(PER_PUBLISHER)] + [("fast", i) for i in range(PER_PUBLISHER)])


@pytest.mark.parametrize("layer", ["redis", "redis_pubsub"])
def test_two_publishing_processes_reach_a_filtered_socket_exactly_once(layer, workspace, api_key, redis_url, tmp_path):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    session_open(workspace=workspace, session_id="order-1", model={"provider": "scripted", "model": "scripted-1"})
    server = AsgiServer(
        log_path=tmp_path / "server.log", redis_url=redis_url, extra_env={"LASHOPS_CHANNEL_LAYER": layer}
    ).start()
    log = open(tmp_path / "publishers.log", "wb")  # noqa: SIM115
    try:
        early, _ = _follow(server.port, api_key)
        start_at = time.time() + 5  # both publish at once, however long each takes to start
        slow = _publisher(workspace, "order-1", "slow", 120, layer, redis_url, log, start_at)
        fast = _publisher(workspace, "order-1", "fast", 0, layer, redis_url, log, start_at)
        deadline = time.monotonic() + 60
        received: list[dict] = []
        _drain(early, received, deadline, until=PER_PUBLISHER // 2)
        late, late_received = _follow(server.port, api_key)  # joins mid-stream: replay, then live
        _drain(early, received, deadline)
        _drain(late, late_received, deadline)
        assert slow.wait(timeout=30) == 0 and fast.wait(timeout=30) == 0
        for ws in (early, late):
            with pytest.raises(TimeoutError):  # nothing more: no duplicate follows
                ws.recv(timeout=1.0)
            ws.close()
    finally:
        server.stop()
        log.close()

    _check(received)
    _check(late_received)
    cursors = [m["cursor"] for m in received]
    assert cursors != sorted(cursors)  # some lower cursors really did arrive late, and were delivered
    for tag in ("slow", "fast"):  # each publisher's own events arrive in its order
        mine = [m["data"]["i"] for m in received if m["data"]["tag"] == tag]
        assert mine == sorted(mine)
