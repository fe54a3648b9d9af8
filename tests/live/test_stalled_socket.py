"""A client that stops reading, against a real server (uvicorn, and daphne). Under daphne a send
never blocks (Twisted buffers every frame in user space), so without backpressure the server's
memory grows by every event sent to that socket and the client is never told it has a gap; the
socket's write gate (lashops.core.backpressure) makes the writer wait. uvicorn's send waits for the
transport itself. Either way the bounded send queue fills, events are dropped and the client is
sent ``stream.gap`` (slow_consumer) once it reads again, while the publisher and a normal client
on the same server are unaffected."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.sync.client import connect
from websockets.uri import parse_uri

from lashops.core import live
from lashops.core.events import EventDraft, publish_many
from tests.live.server import AsgiServer, use_redis_layer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOTAL = 10_000
QUEUE = 200  # LASHOPS_WS_SEND_QUEUE: how far a socket may fall behind before its events are dropped
PAD = 1000  # bytes of filler per event, so a socket's backlog shows clearly in the server's RSS
# Measured on the 2-core machine CI runs on, under daphne without the write gate: the stalled socket grew daphne's RSS by 9.9-13.3 MiB for these 10,000 events (the
# first ~1,700, about 2 MiB, fit in the loopback kernel buffers; every later frame stayed in
# Twisted's buffer; 40,000 events: +44.6 MiB) and it was never sent stream.gap. With the gate:
# +1.1 MiB (+2.6 MiB with the default queue of 1,000), the same at 40,000 events.
UNGATED_GROWTH_KIB = 10 * 1024
GATED_LIMIT_KIB = UNGATED_GROWTH_KIB // 3


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                status[key] = int(value.split()[0])
    return status


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer: after the handshake it reads
    nothing until told to, as a client on a dead link or a frozen tab would."""

    def __init__(self, port: int, path: str, api_key: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {api_key}"
        self.protocol.send_request(request)
        self._flush()
        self.pending: list[dict] = []

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def read(self, timeout: float) -> dict | None:
        """The next JSON message, or None when nothing came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("server closed the socket")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.pending.append(json.loads(event.data))
            self._flush()  # pongs
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Reader:
    """A normal client, read on its own thread as fast as the server sends."""

    ws: object
    until: int
    cursors: list[int] = field(default_factory=list)
    other: list[dict] = field(default_factory=list)

    def run(self) -> None:
        while not self.cursors or self.cursors[-1] < self.until:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("cursor") is not None:
                self.cursors.append(message["cursor"])
            else:
                self.other.append(message)


@dataclass
class Outcome:
    publish_seconds: float
    rss_before_kib: int
    rss_stalled_kib: int
    normal: Reader
    stalled: list[dict]  # everything the stalled client read once it read again


def stall_one_socket(*, server_kind: str, workspace, api_key: str, redis_url: str, log_path) -> Outcome:
    """One client stops reading after ``stream.ready``, another reads everything, TOTAL events are
    published; then the stalled client reads whatever the server still has for it."""
    # No in-process scheduler in this server: its first run imports every task module, a one-time
    # ~10 MiB step in RSS that would land inside the measured window.
    extra_env = {"LASHOPS_WS_SEND_QUEUE": str(QUEUE), "LASHOPS_SCHEDULER": "0"}
    server = AsgiServer(server=server_kind, log_path=log_path, redis_url=redis_url, extra_env=extra_env).start()
    url = f"ws://127.0.0.1:{server.port}/ws/fleet/"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        stalled = StalledClient(server.port, "/ws/fleet/", api_key)
        assert stalled.read(timeout=10)["type"] == "stream.ready"  # subscribed; from now on it reads nothing
        with connect(url, additional_headers=headers, max_queue=None) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.ready"
            normal = Reader(ws, until=TOTAL)
            reading = threading.Thread(target=normal.run, daemon=True)
            reading.start()
            time.sleep(1)
            rss_before = memory_kib(server.proc.pid)["VmRSS"]

            started = time.monotonic()
            for batch in range(TOTAL // 100):
                draft = EventDraft(type="load.tick", data={"b": batch, "pad": "x" * PAD})
                publish_many(workspace=workspace, drafts=[draft] * 100)
            publish_seconds = time.monotonic() - started
            live.flush(timeout=60)
            reading.join(timeout=120)
            assert not reading.is_alive(), f"the normal client got {len(normal.cursors)} of {TOTAL} events"
            time.sleep(1)  # let the server finish writing to (or dropping for) the stalled socket
            rss_stalled = memory_kib(server.proc.pid)["VmRSS"]

        received = []
        while (message := stalled.read(timeout=3)) is not None:
            received.append(message)
        stalled.close()
        return Outcome(publish_seconds, rss_before, rss_stalled, normal, received)
    finally:
        server.stop()


def follow(messages: list[dict]) -> int:
    """Replay a client's view: each event continues the last cursor, each gap moves it to the gap's
    ``latest_cursor``. Returns the cursor the client ends at."""
    position = 0
    for message in messages:
        if message["type"] == "stream.gap":
            assert message["data"]["requested_cursor"] == position, message
            position = message["data"]["latest_cursor"]
        elif message.get("cursor") is not None:
            assert message["cursor"] == position + 1, (message["cursor"], position)
            position = message["cursor"]
    return position


@pytest.mark.parametrize("server_kind", ["uvicorn", "daphne"])
def test_a_client_that_stops_reading_gets_a_gap_and_does_not_grow_the_server(
    workspace, api_key, redis_url, settings, tmp_path, server_kind
):
    use_redis_layer(settings, redis_url)

    outcome = stall_one_socket(
        server_kind=server_kind,
        workspace=workspace,
        api_key=api_key,
        redis_url=redis_url,
        log_path=tmp_path / "server.log",
    )

    # The normal client on the same server got every event once, in order, while the other
    # socket was stalled (it read nothing until after this), and was never told of a gap.
    assert outcome.normal.cursors == list(range(1, TOTAL + 1))
    assert not [m for m in outcome.normal.other if m["type"].startswith("stream.")]
    # The publisher was not held back by the stalled socket.
    assert outcome.publish_seconds < 60
    # The stalled client really was stalled: it first gets only what the buffers held when the
    # transport paused, then stream.gap (slow_consumer); following the gaps it ends up current.
    gaps = [m["data"] for m in outcome.stalled if m["type"] == "stream.gap"]
    assert gaps and gaps[0]["reason"] == "slow_consumer" and gaps[0]["dropped"] > 0
    first_gap = next(i for i, m in enumerate(outcome.stalled) if m["type"] == "stream.gap")
    before_gap = [m["cursor"] for m in outcome.stalled[:first_gap] if m.get("cursor") is not None]
    assert before_gap == list(range(1, len(before_gap) + 1)) and len(before_gap) < TOTAL // 2
    assert {g["reason"] for g in gaps} == {"slow_consumer"}
    assert follow(outcome.stalled) == TOTAL
    # The server's memory stayed bounded.
    growth = outcome.rss_stalled_kib - outcome.rss_before_kib
    assert growth < GATED_LIMIT_KIB, f"{server_kind} grew by {growth} KiB with a stalled socket"
