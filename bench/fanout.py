"""Fan-out latency: 100 WebSocket clients on one mob console through channels-redis on a real
ASGI server (uvicorn as in production, or daphne); 1,000 durable frames published;
publish-to-receive p50/p99 against a raw channel-layer ``group_send`` to 100 channels measured in
the same run, with the same layer and the same publishing rate. Also prints the CPU each side
spent per delivery (raw: the publisher and its 100 receivers; LashOps: the server processes).

    REDIS_URL=redis://127.0.0.1:6379/6 .venv/bin/python bench/fanout.py \\
        [--clients 100] [--frames 1000] [--interval-ms 20] [--layer redis|redis_pubsub] [--client-procs 4] \\
        [--server uvicorn|daphne] [--servers 1]

Clients are spread over ``--client-procs`` processes so the measuring side is not the bottleneck.
Uses a throwaway SQLite database unless DATABASE_URL is set. Target: p99 <= 2x the baseline p99.
Latency figures are only worth comparing on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (``/proc``, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def baseline(layer, clients: int, frames: int, interval: float, warmup: int) -> list[float]:
    group = f"bench.raw.{os.getpid()}"
    channels = [await layer.new_channel() for _ in range(clients)]
    for ch in channels:
        await layer.group_add(group, ch)
    latencies: list[float] = []

    async def drain(ch: str) -> None:
        for _ in range(frames):
            message = await layer.receive(ch)
            if message["i"] >= warmup:
                latencies.append(time.time() - message["t0"])

    readers = [asyncio.create_task(drain(ch)) for ch in channels]
    for i in range(frames):
        await layer.group_send(group, {"type": "bench.frame", "t0": time.time(), "i": i})
        await asyncio.sleep(interval)
    await asyncio.wait_for(asyncio.gather(*readers), timeout=120)
    for ch in channels:
        await layer.group_discard(group, ch)
    return latencies


async def _client_sockets(url: str, count: int, frames: int, ready, go) -> list[tuple[int, float]]:
    from websockets.asyncio.client import connect

    sockets = [await connect(url, max_queue=None) for _ in range(count)]
    for ws in sockets:
        while json.loads(await ws.recv())["type"] != "stream.ready":
            pass
    ready.put(count)
    latencies: list[tuple[int, float]] = []

    async def drain(ws) -> None:
        got = 0
        while got < frames:
            message = json.loads(await ws.recv())
            if message.get("type") == "bench.frame":
                latencies.append((message["data"]["i"], time.time()))
                got += 1
            elif message.get("type") == "stream.gap":
                raise RuntimeError(f"socket fell behind: {message}")

    await asyncio.wait_for(asyncio.gather(*(drain(ws) for ws in sockets)), timeout=600)
    for ws in sockets:
        await ws.close()
    return latencies


def client_process(url: str, count: int, frames: int, ready, results) -> None:
    """One measuring process holding ``count`` sockets; sends its latencies back."""
    try:
        results.put(asyncio.run(_client_sockets(url, count, frames, ready, None)))
    except Exception as exc:  # reported by the parent
        ready.put(0)
        results.put(repr(exc))


def through_server(ports: list[int], token: str, mob_id: str, publish, args) -> tuple[list[float], list[float]]:
    """Publish ``args.frames`` frames (the first ``args.warmup`` are not counted) and return the
    publish-to-receive latencies, from the ``publish`` call and from its commit."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    urls = [f"ws://127.0.0.1:{port}/ws/mobs/{mob_id}/console/?token={token}" for port in ports]
    procs = max(1, min(args.client_procs, args.clients))
    shares = [args.clients // procs + (1 if i < args.clients % procs else 0) for i in range(procs)]
    workers = [  # client process i talks to server i mod N: the sockets are spread over the servers
        ctx.Process(target=client_process, args=(urls[i % len(urls)], n, args.frames, ready, results))
        for i, n in enumerate(shares)
    ]
    for w in workers:
        w.start()
    connected = sum(ready.get(timeout=120) for _ in workers)
    if connected != args.clients:
        raise RuntimeError(f"only {connected} of {args.clients} clients connected: {results.get(timeout=5)}")
    started: list[float] = []
    committed: list[float] = []
    for i in range(args.frames):
        started.append(time.time())
        publish(i)
        committed.append(time.time())
        time.sleep(args.interval_ms / 1000)
    received: list[tuple[int, float]] = []
    for _ in workers:
        part = results.get(timeout=600)
        if isinstance(part, str):
            raise RuntimeError(f"a client process failed: {part}")
        received.extend(part)
    for w in workers:
        w.join(timeout=10)
    warm = args.warmup
    from_publish = [t - started[i] for i, t in received if i >= warm]
    from_commit = [t - committed[i] for i, t in received if i >= warm]
    return from_publish, from_commit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--interval-ms", type=float, default=20.0, help="pause between published frames")
    parser.add_argument(
        "--layer", choices=["redis", "redis_pubsub"], default=os.environ.get("LASHOPS_CHANNEL_LAYER", "redis")
    )
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--servers", type=int, default=1, help="server processes sharing the sockets")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn", help="the ASGI server")
    parser.add_argument("--warmup", type=int, default=20, help="frames published first and not counted")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        sys.exit("set REDIS_URL (channels-redis is what this measures)")
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    os.environ.setdefault("DEBUG", "1")
    os.environ["LASHOPS_WS_SEND_QUEUE"] = str(max(1000, args.frames * 2))
    os.environ["LASHOPS_CHANNEL_LAYER"] = args.layer
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
    import django

    django.setup()
    import redis
    from channels.layers import get_channel_layer
    from django.core.management import call_command

    from lashops.core.events import publish
    from lashops.core.services import api_key_create, workspace_get_or_create
    from mobs_app.models import Mob
    from tests.live.server import AsgiServer, free_port

    redis.Redis.from_url(redis_url).flushdb()
    call_command("migrate", verbosity=0)
    workspace = workspace_get_or_create(slug="bench")
    token = api_key_create(workspace=workspace, name="bench").plaintext
    mob, _ = Mob.objects.get_or_create(workspace=workspace, mob_id="bench")  # bench fixture only

    cpu0 = time.process_time()
    base = asyncio.run(baseline(get_channel_layer(), args.clients, args.frames, args.interval_ms / 1000, args.warmup))

    base_cpu = time.process_time() - cpu0  # publisher and 100 receivers, one process

    def publish_frame(i: int) -> None:
        publish(workspace=workspace, type="bench.frame", subject={"mob": str(mob.pk)}, data={"i": i})

    log = Path(tempfile.mkdtemp()) / "server.log"
    servers = []
    for _ in range(args.servers):
        server = AsgiServer(log_path=log, redis_url=redis_url, port=free_port(), server=args.server)
        server.env["DATABASE_URL"] = os.environ["DATABASE_URL"]
        server.env["LASHOPS_WS_SEND_QUEUE"] = os.environ["LASHOPS_WS_SEND_QUEUE"]
        server.env["LASHOPS_CHANNEL_LAYER"] = args.layer
        server.env["DEBUG"] = "0"
        server.env["SECRET_KEY"] = "bench-only"
        server.env["LASHOPS_SCHEDULER"] = "0"  # as in production, where beat runs the sweeps, not servers
        servers.append(server)
    try:
        for server in servers:
            server.start()
        cpu_before = [cpu_seconds(server.proc.pid) for server in servers]
        served, after_commit = through_server([s.port for s in servers], token, "bench", publish_frame, args)
        server_cpu = sum(cpu_seconds(s.proc.pid) - c for s, c in zip(servers, cpu_before, strict=True))
    finally:
        for server in servers:
            server.stop()

    b50, b99 = pct(base, 0.50), pct(base, 0.99)
    s50, s99 = pct(served, 0.50), pct(served, 0.99)
    print(
        f"layer={args.layer} clients={args.clients} frames={args.frames} interval={args.interval_ms:g} ms "
        f"client_procs={args.client_procs} servers={args.servers} deliveries={len(served)}"
    )
    print(f"baseline raw group_send: p50 {b50:.2f} ms  p99 {b99:.2f} ms  (mean {statistics.mean(base) * 1000:.2f})")
    print(f"lashops mob console:     p50 {s50:.2f} ms  p99 {s99:.2f} ms  (mean {statistics.mean(served) * 1000:.2f})")
    deliveries = args.clients * args.frames
    print(
        f"CPU per delivery: raw (publisher + receivers) {base_cpu / deliveries * 1e6:.1f} us, "
        f"lashops server(s) {server_cpu / deliveries * 1e6:.1f} us"
    )
    c50, c99 = pct(after_commit, 0.50), pct(after_commit, 0.99)
    print(f"  of which after commit: p50 {c50:.2f} ms  p99 {c99:.2f} ms  (the rest is the event row's INSERT+COMMIT)")
    print(
        f"ratio p50 {s50 / b50:.2f}x  p99 {s99 / b99:.2f}x  (target p99 <= 2.00x) -> {'OK' if s99 <= 2 * b99 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
