"""A real ASGI server for tests: ``uvicorn lashops.asgi:application`` (the production server, with
the flags the README gives) or ``daphne`` (what ``runserver`` runs) in a subprocess on a free port,
against this test run's database (and Redis channel layer when given)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.workers import ROOT, current_database_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


UVICORN_FLAGS = [
    *("--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio"),
    *("--ws-per-message-deflate", "false", "--lifespan", "off"),
]


class AsgiServer:
    def __init__(
        self,
        *,
        log_path: Path,
        redis_url: str = "",
        port: int | None = None,
        extra_env: dict | None = None,
        server: str = "uvicorn",
        application: str = "lashops.asgi:application",
    ):
        if server not in ("uvicorn", "daphne"):
            raise ValueError(f"server must be uvicorn or daphne, not {server!r}")
        self.server = server
        self.application = application
        self.port = port or free_port()
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env.update(
            {
                "DATABASE_URL": current_database_url(),
                "LASHOPS_TESTING": "1",
                "DEBUG": "1",
                "PYTHONUNBUFFERED": "1",
                "LASHOPS_SCHEDULER": "1",
            }
        )
        self.env.pop("CELERY_BROKER_URL", None)
        if redis_url:
            self.env["REDIS_URL"] = redis_url
        else:
            self.env.pop("REDIS_URL", None)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            host = ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
            return [sys.executable, "-m", "uvicorn", *host, *UVICORN_FLAGS, self.application]
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), self.application]

    def start(self, timeout: float = 30) -> AsgiServer:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.server} did not listen in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server: no clean close for its sockets."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def use_redis_layer(settings, redis_url: str) -> None:
    """Publish through the Redis channel layer the server reads (the test process has none).
    ``settings`` is pytest-django's fixture, so the layer is restored after the test."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": 30}], "capacity": 1000, "expiry": 60},
        }
    }


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """A JSON request with the standard library (no extra client dependency)."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
