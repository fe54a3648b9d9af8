"""A private PostgreSQL cluster for failure tests: its own data directory in a temp dir, its own
port, started and stopped with ``pg_ctl``. Tests that stop or restart the database use this one;
the shared server (127.0.0.1:5432) is never touched.

We run as root in CI and on the dev machine, and ``initdb`` refuses root: the cluster belongs to
the ``postgres`` OS user (``runuser``), in a directory that user owns.

    with PostgresInstance() as pg:
        pg.create_database("app", schema_from=current_database_url())
        url = pg.url("app")            # postgres://postgres@127.0.0.1:<port>/app
        pg.restart(down_seconds=3)     # really down for 3 s: connections are refused
        with pg.as_default_database("app"):
            ...                        # Django's default connection points at the private cluster
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

OS_USER = "postgres"


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise FileNotFoundError("no PostgreSQL server binaries (pg_ctl) under /usr/lib/postgresql/*/bin or on PATH")


def available() -> str | None:
    """None when a private cluster can be run here, else the reason it cannot."""
    try:
        _bin_dir()
    except FileNotFoundError as exc:
        return str(exc)
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and there is no {OS_USER!r} OS user to own the cluster"
    return None


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresInstance:
    """One private cluster. ``start``/``stop``/``restart``; ``close`` stops it and deletes it."""

    def __init__(self, *, port: int | None = None) -> None:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self.bin = _bin_dir()
        self.port = port or spare_port()
        self.base = Path(tempfile.mkdtemp(prefix="lashops-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.base, user=OS_USER, group=OS_USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        settings = (
            f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.base}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(settings)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start")
        self._wait_accepting(timeout)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects every client at once; ``immediate`` is a crash)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, *, down_seconds: float = 0.0, mode: str = "fast") -> float:
        """Stop, stay down ``down_seconds`` (connections are refused meanwhile), start again.
        Returns how long the server was really down (from stop to accepting again)."""
        self.stop(mode)
        stopped = time.monotonic()
        assert not self.accepting(), "the server still accepts connections after pg_ctl stop"
        time.sleep(down_seconds)
        self.start()
        return time.monotonic() - stopped

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, *, dbname: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql, self.url(dbname)],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def create_database(self, name: str, *, schema_from: str | None = None) -> str:
        """Create ``name``; with ``schema_from`` (a postgres:// URL, typically the migrated test
        database) copy its schema and the migration history, so Django can use it at once."""
        self.psql(f'CREATE DATABASE "{name}"')
        if schema_from:
            dump = subprocess.run(
                [str(self.bin / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", schema_from],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(
                [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(name)],
                input=dump,
                check=True,
                capture_output=True,
            )
            rows = subprocess.run(
                [
                    str(self.bin / "pg_dump"),
                    "--data-only",
                    "-t",
                    "django_migrations",
                    "-t",
                    "django_content_type",
                    schema_from,
                ],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(
                [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(name)],
                input=rows,
                check=True,
                capture_output=True,
            )
        return self.url(name)

    @contextlib.contextmanager
    def as_default_database(self, name: str) -> Iterator[None]:
        """Point Django's default connection (in this thread and process) at database ``name``
        of this cluster for the duration, then back (the test database is never touched)."""
        from django.db import connection

        saved = {key: connection.settings_dict[key] for key in ("NAME", "HOST", "PORT", "USER", "PASSWORD")}
        connection.close()
        connection.settings_dict.update(
            {"NAME": name, "HOST": "127.0.0.1", "PORT": str(self.port), "USER": "postgres", "PASSWORD": ""}
        )
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.update(saved)

    # --- plumbing --------------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}\n{log}")

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL on port {self.port} did not accept connections in {timeout}s")
