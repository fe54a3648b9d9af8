"""Process throughput against raw Celery, measured in the same run.

Needs PostgreSQL and Redis. ``DATABASE_URL`` only names the server: the benchmark creates its
own scratch database (``lashops_bench_processes``), migrates it and drops it at the end; it
refuses ``test``/``test_*``. ``CELERY_BROKER_URL`` names a Redis database the benchmark owns
(default db 12): it is flushed before and after. It starts two Celery workers, then runs:

0. a profile: ``--profile-n`` one-step processes started and driven in this process, counting
   statements and commits per process (``execute_wrapper`` + a wrapped ``connection.commit``);
1. ``--n`` raw Celery no-op tasks (the baseline);
2. ``--n`` one-step processes (start -> claim -> step -> complete) through the workers, started with
   ``process_start_many`` in calls of ``--start-batch`` (default 1,000, the batch endpoint's limit);
3. ``--sleepers`` processes that sleep for a minute, then 200 one-step processes: the sleepers
   hold no worker slot and no lease, so the one-step ones finish as fast as before.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/processes.py [--n 2000] [--sleepers 1000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
os.environ.setdefault("LASHOPS_SCHEDULER", "0")
os.environ.setdefault("DEBUG", "0")  # DEBUG keeps every query in memory
os.environ.setdefault("SECRET_KEY", "bench-processes-not-secret-" + "x" * 40)

from celery import shared_task  # noqa: E402


@shared_task(name="bench.noop")
def noop() -> None:
    """The baseline: a task that does nothing (workers import this module through
    LASHOPS_PROCESS_DEFINITIONS=bench.processes)."""
    return None


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


class Counter:
    """Statements and commits of the Django connection, with the project function that made them."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.statements = 0
        self.commits = 0
        self.sources: collections.Counter[str] = collections.Counter()
        self._commit = connection.commit

    @staticmethod
    def _caller() -> str:
        for frame in reversed(traceback.extract_stack(limit=40)):
            if "/site-packages/" in frame.filename or frame.filename.endswith("bench/processes.py"):
                continue
            if "/processes_app/" in frame.filename or "/lashops/" in frame.filename:
                return f"{Path(frame.filename).parent.name}/{Path(frame.filename).stem}.{frame.name}"
        return "?"

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        if not self.connection.in_atomic_block:
            self.commits += 1  # autocommit: the statement is its own transaction
            self.sources[f"autocommit {self._caller()}"] += 1
        return execute(sql, params, many, context)

    def counting_commit(self) -> None:
        self.commits += 1
        self.sources[f"atomic     {self._caller()}"] += 1
        self._commit()


def greetings(prefix: str, n: int) -> list:
    from processes_app.services import ProcessStartSpec

    return [
        ProcessStartSpec(
            process_id=f"{prefix}-{i}", definition="demo.greet", input={"name": str(i)}, disposition="rerunnable"
        )
        for i in range(n)
    ]


def profile(workspace, n: int) -> list[str]:
    """Start and drive ``n`` one-step processes in this process; per-process costs."""
    from django.db import connection

    from processes_app.engine import drive
    from processes_app.services import process_start_many

    counter = Counter(connection)
    connection.commit = counter.counting_commit
    try:
        with connection.execute_wrapper(counter):
            t0 = time.perf_counter()
            process_start_many(workspace=workspace, processes=greetings("prof", n))
            started = (counter.statements, counter.commits)
            while drive():
                pass
            elapsed = time.perf_counter() - t0
    finally:
        del connection.commit
    run_statements = counter.statements - started[0]
    run_commits = counter.commits - started[1]
    lines = [
        f"profile ({n} one-step processes driven in this thread; wake-ups to the broker are discarded):",
        f"  start (process_start_many):      {started[0]} statements for all {n}",
        f"  claim + run + finish:            {run_statements / n:.1f} statements, {run_commits / n:.2f} commits/process",
        f"  wall {elapsed:.2f}s -> {n / elapsed:.0f}/s in one thread",
        "  commits by source (per process):",
    ]
    for source, count in sorted(counter.sources.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"    {count / n:5.2f}  {source}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--sleepers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile-n", type=int, default=200)
    parser.add_argument(
        "--start-batch", type=int, default=1000, help="processes per process_start_many (the batch endpoint's limit)"
    )
    parser.add_argument("--cprofile", action="store_true", help="cProfile the profile phase, then stop")
    parser.add_argument("--database", default="lashops_bench_processes", help="scratch database (created, dropped)")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
    if not server_url.startswith(("postgres://", "postgresql://")):
        sys.exit("set DATABASE_URL=postgres://... (the server to create a scratch database on)")
    if args.database in {"test", "postgres", "template0", "template1"} or args.database.startswith("test_"):
        sys.exit(f"refusing to use {args.database!r} as the scratch database")
    import psycopg
    import redis

    admin = psycopg.connect(
        with_database(server_url, "postgres").replace("postgres://", "postgresql://", 1), autocommit=True
    )
    admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{args.database}"')
    os.environ["DATABASE_URL"] = with_database(server_url, args.database)
    os.environ["CELERY_BROKER_URL"] = broker
    os.environ["REDIS_URL"] = broker  # workers send live events through channels-redis, as in production
    redis.Redis.from_url(broker).flushdb()
    try:
        run(args, broker)
    finally:
        from django.db import connections

        connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.close()
        redis.Redis.from_url(broker).flushdb()
        print(f"scratch database {args.database!r} dropped, broker {broker} flushed")


def run(args: argparse.Namespace, broker: str) -> None:
    import django
    import redis

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Exists, OuterRef

    from lashops import celery_app
    from lashops.core.models import Lease
    from lashops.core.services import workspace_get_or_create
    from processes_app.models import Process
    from processes_app.services import ProcessStartSpec, process_start_many
    from tests.workers import WorkerProcess

    call_command("migrate", verbosity=0)
    workspace = workspace_get_or_create(slug="bench")
    if args.cprofile:
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            print("\n".join(profile(workspace, args.profile_n)))
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        return
    profile_lines = profile(workspace, args.profile_n) if args.profile_n else []
    connection.close()
    redis.Redis.from_url(broker).flushdb()  # the profile's wake-ups: no worker is running yet

    workers = [
        WorkerProcess(
            broker,
            concurrency=args.concurrency,
            log_path=Path("/tmp") / f"bench-worker-{i}.log",
            extra_env={"LASHOPS_PROCESS_DEFINITIONS": "bench.processes", "LASHOPS_SCHEDULER": "0"},
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            worker.wait_ready(celery_app, timeout=60)

        # 1. raw Celery: the result backend is off, so count completions from the worker log.
        def done_noops() -> int:
            return sum(
                line.startswith("[") and "bench.noop[" in line and "succeeded" in line
                for w in workers
                for line in w.log_path.read_text().splitlines()
            )

        start = time.perf_counter()
        for _ in range(args.n):
            celery_app.send_task("bench.noop", queue="lashops")
        while done_noops() < args.n:
            time.sleep(0.02)
        raw_seconds = time.perf_counter() - start
        raw_rate = args.n / raw_seconds

        # 2. one-step processes (one process_start_many: their wake-ups leave at its commit)
        start_seconds = 0.0

        def run_batch(prefix: str, count: int) -> tuple[float, list[float]]:
            nonlocal start_seconds
            specs = greetings(prefix, count)
            begin = time.perf_counter()
            for first in range(0, count, args.start_batch):
                process_start_many(workspace=workspace, processes=specs[first : first + args.start_batch])
            start_seconds = time.perf_counter() - begin
            qs = Process.objects.filter(pk__startswith=f"{prefix}-")
            while qs.filter(status="running").exists():
                time.sleep(0.05)
            elapsed = time.perf_counter() - begin
            latencies = [(f - c).total_seconds() for c, f in qs.values_list("created_at", "finished_at")]
            return elapsed, latencies

        proc_seconds, latencies = run_batch("b", args.n)
        proc_rate = args.n / proc_seconds
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        batch = int(settings.LASHOPS_PROCESS_CLAIM_BATCH)
        calls = -(-args.n // args.start_batch)
        messages = sum(-(-min(args.start_batch, args.n - i) // batch) for i in range(0, args.n, args.start_batch))
        print(
            f"measured: raw = {args.n} send_task() calls from this thread, until the workers logged {args.n} "
            f"no-ops succeeded;\n          processes = {calls} process_start_many() call(s) of up to "
            f"{args.start_batch} from this thread (one transaction each, {messages} drive messages in all, each "
            f"sent after its commit), until all {args.n} rows are terminal"
        )
        print(f"raw celery no-op tasks:   {args.n} in {raw_seconds:.2f}s = {raw_rate:.0f}/s")
        print(
            f"one-step processes:       {args.n} in {proc_seconds:.2f}s = {proc_rate:.0f}/s"
            f"  (of which {start_seconds:.2f}s in process_start_many, commits and sends included)"
        )
        print(f"ratio (processes / raw):  {proc_rate / raw_rate:.2f}  (target >= 1.0, floor 0.5)")
        print(f"start-to-completion p50:  {p50 * 1000:.0f} ms   p99: {p99 * 1000:.0f} ms", flush=True)
        run_rate = args.n / (proc_seconds - start_seconds)
        print(f"after the last start committed: {run_rate:.0f}/s (ratio {run_rate / raw_rate:.2f})", flush=True)

        # 3. sleepers hold no slot: 200 one-step processes before and alongside them
        if args.sleepers:
            before_seconds, before_latencies = run_batch("c", 200)
            process_start_many(
                workspace=workspace,
                processes=[
                    ProcessStartSpec(
                        process_id=f"z-{i}", definition="demo.approval", input={"sleep": 60}, disposition="rerunnable"
                    )
                    for i in range(args.sleepers)
                ],
            )
            sleepers = Process.objects.filter(pk__startswith="z-")
            parked = sleepers.filter(wait_kind="timer")
            deadline = time.monotonic() + 120
            while parked.count() < args.sleepers and time.monotonic() < deadline:
                time.sleep(0.1)
            leased = Exists(Lease.objects.filter(scope="process", key=OuterRef("pk")).exclude(holder=""))
            held = sleepers.filter(leased).count()
            parked_count = parked.count()
            after_seconds, after_latencies = run_batch("a", 200)
            held_after = sleepers.filter(leased).count()
            print(
                f"sleepers: {parked_count}/{args.sleepers} parked on timers, {held} holding a lease "
                f"({held_after} after the batch below)\n"
                f"  200 one-step processes before them:  {200 / before_seconds:.0f}/s, "
                f"p50 {statistics.median(before_latencies) * 1000:.0f} ms\n"
                f"  200 one-step processes alongside:    {200 / after_seconds:.0f}/s, "
                f"p50 {statistics.median(after_latencies) * 1000:.0f} ms"
            )
        print("\n".join(profile_lines))
    finally:
        for worker in workers:
            worker.stop()
        connection.close()


if __name__ == "__main__":
    main()
