"""Redis (the channel layer) restarted with ``SHUTDOWN NOSAVE`` while events flow: a running server
loses its group memberships and every message in flight. Each socket it serves, on a filtered
stream and on the fleet stream, opened before the restart or after it, still gets every durable
event once, in cursor order (or a ``stream.gap`` that covers it), and live events keep coming.
The publisher (another process) keeps committing through the outage: its failed live sends are
logged, never raised.

Runs on a private redis-server (``tests/support/redis_instance.py``), never the shared one."""

import itertools
import json
import subprocess
import sys
import threading
import time

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from lashops.core.models import Event
from tests.live.server import AsgiServer
from tests.workers import ROOT, current_database_url, die_with_parent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EVENTS = 600  # published about 6 ms apart: the restart falls in the first half
PAUSE_MS = 5


class Collector:
    """Reads one socket on a thread until told to stop."""

    def __init__(self, url: str, headers: dict) -> None:
        self.ws = connect(url, additional_headers=headers)
        self.messages: list[dict] = []
        while True:  # events committed while the socket joined are replayed before stream.ready
            message = json.loads(self.ws.recv(timeout=10))
            if message["type"] == "stream.ready":
                break
            self.messages.append(message)
        self.after = message["data"]["after"]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.messages.append(json.loads(self.ws.recv(timeout=0.2)))
            except TimeoutError:
                continue
            except ConnectionClosed:
                return

    def cursors(self) -> list[int]:
        return [m["cursor"] for m in list(self.messages) if m.get("cursor") is not None]

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.ws.close()


def _expected(workspace, *, after: int, processes: bool) -> list[int]:
    rows = Event.objects.filter(workspace=workspace, cursor__gt=after)
    if processes:
        rows = rows.exclude(process_id="")
    return list(rows.order_by("cursor").values_list("cursor", flat=True))


def _check(name: str, collector: Collector, expected: list[int]) -> dict:
    """Every expected cursor arrived once, in order, or lies inside a gap the socket was told of."""
    got = collector.cursors()
    gaps = [
        (m["data"]["requested_cursor"], m["data"]["latest_cursor"])
        for m in collector.messages
        if m["type"] == "stream.gap"
    ]
    duplicates = len(got) - len(set(got))
    out_of_order = sum(1 for a, b in itertools.pairwise(got) if b <= a)
    gapped = {c for c in expected if any(low < c <= high for low, high in gaps)}
    missing = [c for c in expected if c not in set(got) and c not in gapped]
    unexpected = sorted(set(got) - set(expected))
    report = {
        "socket": name,
        "expected": len(expected),
        "received": len(got),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "gapped": len(gapped),
        "missing": len(missing),
        "unexpected": len(unexpected),
    }
    print(report)
    return report


@pytest.mark.parametrize("outage", ["shutdown_nosave", "flushall"])
def test_every_socket_gets_every_event_once_through_a_redis_restart(
    workspace, api_key, redis_instance, tmp_path, outage
):
    """``shutdown_nosave``: reads fail while Redis is down, and it comes back empty. ``flushall``:
    the memberships vanish and no read fails (what a restart looks like to a read that redis-py
    retried across it): only the fan-out's membership check can notice."""
    redis_url = redis_instance.url(0)
    server = AsgiServer(
        log_path=tmp_path / "server.log", redis_url=redis_url, extra_env={"LASHOPS_FANOUT_CHECK_SECONDS": "0.5"}
    ).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    base = f"ws://127.0.0.1:{server.port}"
    collectors: dict[str, Collector] = {}
    publisher = None
    try:
        collectors["processes, before"] = Collector(f"{base}/ws/processes/", headers)
        collectors["fleet, before"] = Collector(f"{base}/ws/fleet/", headers)
        env = {
            **server.env,
            "DATABASE_URL": current_database_url(),
            "REDIS_URL": redis_url,
        }
        publisher = subprocess.Popen(
            [sys.executable, "-m", "tests.live.flow_publisher", workspace.slug, str(EVENTS), str(PAUSE_MS)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "publisher.log", "wb"),  # noqa: SIM115
            text=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 30
        while Event.objects.filter(workspace=workspace).count() < EVENTS // 4:
            assert publisher.poll() is None and time.monotonic() < deadline, "the publisher stalled"
            time.sleep(0.05)

        if outage == "shutdown_nosave":
            redis_instance.stop()  # memberships and queued messages are gone
            assert not redis_instance.ping()
            time.sleep(1.0)  # events keep committing while the layer is down
            redis_instance.start()
        else:
            redis.Redis.from_url(redis_url).flushall()
            time.sleep(1.0)  # events keep committing while no server is a member of any group
        during = Event.objects.filter(workspace=workspace).count()
        assert during < EVENTS - 100, "the restart came too late to leave events after it"

        time.sleep(0.5)
        collectors["processes, after"] = Collector(f"{base}/ws/processes/", headers)
        collectors["fleet, after"] = Collector(f"{base}/ws/fleet/", headers)

        out, _ = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, (tmp_path / "publisher.log").read_text()[-3000:]
        assert f"published {EVENTS}" in out
        expected = {
            name: _expected(workspace, after=c.after, processes=name.startswith("processes"))
            for name, c in collectors.items()
        }
        assert all(expected.values())  # sockets opened after the restart have live events to get
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(set(expected[name]) <= set(c.cursors()) for name, c in collectors.items()):
                break
            time.sleep(0.2)
        time.sleep(0.5)  # anything sent twice would arrive now
        reports = [_check(name, c, expected[name]) for name, c in collectors.items()]
    finally:
        for c in collectors.values():
            c.close()
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        server.stop()
    log = (tmp_path / "server.log").read_text()
    for report in reports:
        assert (report["duplicates"], report["out_of_order"], report["missing"], report["unexpected"]) == (
            0,
            0,
            0,
            0,
        ), (
            reports,
            log[-3000:],
        )


def test_a_socket_that_reconnects_with_its_cursor_to_a_restarted_server_mid_flow_gets_each_event_once(
    workspace, api_key, redis_instance, tmp_path
):
    """The server is killed while events flow; the client reconnects with the last cursor it had
    to the restarted server, which hears every publisher mid-count (a resync while the socket is
    still replaying): each event after that cursor arrives once, in order, on the filtered stream
    and on the fleet."""
    redis_url = redis_instance.url(0)
    server = AsgiServer(log_path=tmp_path / "server.log", redis_url=redis_url).start()
    headers = {"Authorization": f"Bearer {api_key}"}
    collectors: dict[str, Collector] = {}
    first: dict[str, Collector] = {}
    publisher = None
    try:
        base = f"ws://127.0.0.1:{server.port}"
        first = {
            "processes": Collector(f"{base}/ws/processes/", headers),
            "fleet": Collector(f"{base}/ws/fleet/", headers),
        }
        publisher = subprocess.Popen(
            [sys.executable, "-m", "tests.live.flow_publisher", workspace.slug, str(EVENTS), str(PAUSE_MS)],
            cwd=ROOT,
            env={**server.env, "DATABASE_URL": current_database_url(), "REDIS_URL": redis_url},
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "publisher.log", "wb"),  # noqa: SIM115
            text=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 30
        while Event.objects.filter(workspace=workspace).count() < EVENTS // 4:
            assert publisher.poll() is None and time.monotonic() < deadline, "the publisher stalled"
            time.sleep(0.05)
        server.kill()
        assert server.proc.poll() is not None
        for c in first.values():
            c.close()
        server.start()
        base = f"ws://127.0.0.1:{server.port}"
        for name, c in first.items():
            cursor = max(c.cursors(), default=c.after)
            path = "processes" if name == "processes" else "fleet"
            collectors[name] = Collector(f"{base}/ws/{path}/?after={cursor}", headers)
        assert Event.objects.filter(workspace=workspace).count() < EVENTS - 100, "reconnected too late"
        out, _ = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, (tmp_path / "publisher.log").read_text()[-3000:]
        assert f"published {EVENTS}" in out
        expected = {
            name: _expected(workspace, after=c.after, processes=name == "processes") for name, c in collectors.items()
        }
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(set(expected[name]) <= set(c.cursors()) for name, c in collectors.items()):
                break
            time.sleep(0.2)
        time.sleep(0.5)  # anything sent twice would arrive now
        reports = [_check(name, c, expected[name]) for name, c in collectors.items()]
    finally:
        for c in [*first.values(), *collectors.values()]:
            c.close()
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
        server.stop()
    for report in reports:
        assert (report["duplicates"], report["out_of_order"], report["missing"], report["unexpected"]) == (
            0,
            0,
            0,
            0,
        ), reports
