"""Fan-out latency: 100 WebSocket clients on one mob console through channels-redis on a real
daphne server; 1,000 durable frames published; publish-to-receive p50/p99 against a raw
channel-layer ``group_send`` to 100 channels measured in the same run.

    REDIS_URL=redis://127.0.0.1:6379/6 .venv/bin/python bench/fanout.py [--clients 100] [--frames 1000]

Uses a throwaway SQLite database unless DATABASE_URL is set. Target: p99 <= 2x the baseline p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def baseline(layer, clients: int, frames: int) -> list[float]:
    group = f"bench.raw.{os.getpid()}"
    channels = [await layer.new_channel() for _ in range(clients)]
    for ch in channels:
        await layer.group_add(group, ch)
    latencies: list[float] = []

    async def drain(ch: str) -> None:
        for _ in range(frames):
            message = await layer.receive(ch)
            latencies.append(time.time() - message["t0"])

    readers = [asyncio.create_task(drain(ch)) for ch in channels]
    for _ in range(frames):
        await layer.group_send(group, {"type": "bench.frame", "t0": time.time()})
        await asyncio.sleep(0.002)
    await asyncio.wait_for(asyncio.gather(*readers), timeout=120)
    for ch in channels:
        await layer.group_discard(group, ch)
    return latencies


async def through_server(port: int, token: str, mob_id: str, publish, clients: int, frames: int) -> list[float]:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws/mobs/{mob_id}/console/?token={token}"
    sockets = [await connect(url, max_queue=None) for _ in range(clients)]
    for ws in sockets:
        while json.loads(await ws.recv())["type"] != "stream.ready":
            pass
    latencies: list[float] = []

    async def drain(ws) -> None:
        got = 0
        while got < frames:
            message = json.loads(await ws.recv())
            if message.get("type") == "bench.frame":
                latencies.append(time.time() - message["data"]["t0"])
                got += 1

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    done = threading.Event()

    def publisher() -> None:
        for _ in range(frames):
            publish()
            time.sleep(0.002)
        done.set()

    threading.Thread(target=publisher, daemon=True).start()
    await asyncio.wait_for(asyncio.gather(*readers), timeout=300)
    for ws in sockets:
        await ws.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--frames", type=int, default=1000)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("set REDIS_URL (channels-redis is what this measures)")
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    os.environ.setdefault("DEBUG", "1")
    os.environ["LASHOPS_WS_SEND_QUEUE"] = str(max(1000, args.frames * 2))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
    import django

    django.setup()
    import redis
    from channels.layers import get_channel_layer
    from django.core.management import call_command

    from lashops.core.events import publish
    from lashops.core.services import api_key_create, workspace_get_or_create
    from mobs_app.models import Mob
    from tests.live.server import DaphneServer, free_port

    redis.Redis.from_url(redis_url).flushdb()
    call_command("migrate", verbosity=0)
    workspace = workspace_get_or_create(slug="bench")
    token = api_key_create(workspace=workspace, name="bench").plaintext
    mob, _ = Mob.objects.get_or_create(workspace=workspace, mob_id="bench")  # bench fixture only

    base = asyncio.run(baseline(get_channel_layer(), args.clients, args.frames))

    def publish_frame() -> None:
        publish(workspace=workspace, type="bench.frame", subject={"mob": str(mob.pk)}, data={"t0": time.time()})

    log = Path(tempfile.mkdtemp()) / "daphne.log"
    server = DaphneServer(log_path=log, redis_url=redis_url, port=free_port())
    server.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    server.env["LASHOPS_WS_SEND_QUEUE"] = os.environ["LASHOPS_WS_SEND_QUEUE"]
    server.env["DEBUG"] = "0"
    server.env["SECRET_KEY"] = "bench-only"
    server.start()
    try:
        served = asyncio.run(through_server(server.port, token, "bench", publish_frame, args.clients, args.frames))
    finally:
        server.stop()

    b50, b99 = pct(base, 0.50), pct(base, 0.99)
    s50, s99 = pct(served, 0.50), pct(served, 0.99)
    print(f"clients={args.clients} frames={args.frames} deliveries={len(served)}")
    print(f"baseline raw group_send: p50 {b50:.2f} ms  p99 {b99:.2f} ms  (mean {statistics.mean(base) * 1000:.2f})")
    print(f"lashops mob console:     p50 {s50:.2f} ms  p99 {s99:.2f} ms  (mean {statistics.mean(served) * 1000:.2f})")
    print(
        f"ratio p50 {s50 / b50:.2f}x  p99 {s99 / b99:.2f}x  (target p99 <= 2.00x) -> {'OK' if s99 <= 2 * b99 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
