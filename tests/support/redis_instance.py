"""A private ``redis-server`` for failure tests: started on a spare loopback port, stopped the way
an operator or a crash would (``SHUTDOWN NOSAVE``: every key, group membership and queued message
is gone) and started again on the same port, so clients configured with its URL reconnect to an
empty server. The shared Redis (6379) is never touched.

In a test::

    def test_something(redis_instance):           # the fixture (tests/conftest.py)
        url = redis_instance.url(db=0)             # redis://127.0.0.1:<port>/0
        ...
        redis_instance.restart(down_for=1.0)       # shutdown nosave, wait, start on the same port

Or by hand::

    with RedisInstance() as instance:
        instance.stop()    # SHUTDOWN NOSAVE; the port refuses connections
        instance.start()   # same port, empty data set

Needs ``redis-server`` on PATH (or ``LASHOPS_REDIS_SERVER``); ``available()`` says whether it is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.workers import die_with_parent


def redis_server_binary() -> str | None:
    return os.environ.get("LASHOPS_REDIS_SERVER") or shutil.which("redis-server")


def available() -> bool:
    return redis_server_binary() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisInstance:
    """One private ``redis-server`` process (no persistence) on ``127.0.0.1:port``."""

    def __init__(self, *, port: int | None = None, log_dir: Path | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = port or _free_port()
        self.dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="lashops-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisInstance:
        """Start the server on ``self.port`` and return once it answers PING."""
        if self.running:
            return self
        command = [
            self.binary,
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(self.dir), "--logfile", str(self.log_path)),
        ]
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
            if self._wait_ready(deadline):
                self.starts += 1
                return self
            # The port may still be in TIME_WAIT or taken by a just-stopped server: retry until the deadline.
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
            if time.monotonic() >= deadline:
                tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"redis-server did not start on port {self.port} in {timeout}s:\n{tail}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.ping():
                return True
            time.sleep(0.05)
        return False

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """``SHUTDOWN NOSAVE``: the data set is dropped, as in a crash without persistence. Returns
        once the process has exited (killed if it did not exit in ``timeout``)."""
        if not self.running:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"SHUTDOWN NOSAVE\r\n")
                try:
                    s.recv(64)  # the server closes the connection as it exits
                except OSError:
                    pass
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self, *, down_for: float = 0.0) -> None:
        """Stop (``SHUTDOWN NOSAVE``), stay down ``down_for`` seconds, start on the same port."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> RedisInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
