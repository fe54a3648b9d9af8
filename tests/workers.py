"""Start real Celery worker (and beat) processes against the test database and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def current_database_url() -> str:
    """A DATABASE_URL for the database this test process is using (the test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def service_env(broker_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": current_database_url(),
            "CELERY_BROKER_URL": broker_url,
            "REDIS_URL": broker_url,
            "LASHOPS_TESTING": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies, so an interrupted run never
    leaves workers consuming from the next run's broker (Linux only; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class WorkerProcess:
    def __init__(self, broker_url: str, *, concurrency: int = 2, log_path: Path, extra_env: dict | None = None):
        self.name = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "lashops",
                "worker",
                "-n",
                self.name,
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "-Q",
                "lashops",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=service_env(broker_url, **(extra_env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, app, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            replies = app.control.ping(destination=[self.name], timeout=0.5)
            if replies:
                return
        raise RuntimeError(f"worker did not answer a ping in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (the main process and its pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextmanager
def celery_app_on(broker_url: str) -> Iterator:
    """Point this process's Celery app at ``broker_url`` for the duration (then restore)."""
    from lashops import celery_app

    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = broker_url
    _drop_connections(celery_app)
    try:
        yield celery_app
    finally:
        celery_app.conf.broker_url = previous
        _drop_connections(celery_app)


def _drop_connections(app) -> None:
    """Forget pooled broker connections (and the producer pool built on them) so the next use
    connects to the configured broker. Not app.close(): that also de-registers the app, and
    shared_tasks defined later (lazily imported task modules) would never be registered on it."""
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
