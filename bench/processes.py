"""Process throughput against raw Celery, measured in the same run.

Needs PostgreSQL and Redis (use a scratch database: it migrates it and leaves its rows). It
starts two Celery workers, then runs:

1. 2,000 raw Celery no-op tasks (the baseline);
2. 2,000 one-step processes (start -> claim -> step -> complete);
3. 1,000 processes that sleep for a minute, then 200 one-step processes: the sleepers
   hold no worker slot and no lease, so the one-step ones finish as fast as before.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/processes.py [--n 2000] [--sleepers 1000] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("LASHOPS_SCHEDULER", "0")

from celery import shared_task  # noqa: E402


@shared_task(name="bench.noop")
def noop() -> None:
    """The baseline: a task that does nothing (workers import this module through
    LASHOPS_PROCESS_DEFINITIONS=bench.processes)."""
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--sleepers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("CELERY_BROKER_URL"):
        sys.exit("set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis)")

    import django

    django.setup()
    import redis
    from django.db import connection, transaction

    from lashops import celery_app
    from lashops.core.services import workspace_get_or_create
    from processes_app.models import Process
    from processes_app.services import process_start
    from tests.workers import WorkerProcess

    broker = os.environ["CELERY_BROKER_URL"]
    redis.Redis.from_url(broker).flushdb()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    Process.objects.filter(definition_name__in=["demo.greet", "demo.approval"]).delete()
    workspace = workspace_get_or_create(slug="bench")
    logs = Path("/tmp")
    workers = [
        WorkerProcess(
            broker,
            concurrency=args.concurrency,
            log_path=logs / f"bench-worker-{i}.log",
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

        # 2. one-step processes
        def run_batch(prefix: str, count: int) -> tuple[float, list[float]]:
            begin = time.perf_counter()
            with transaction.atomic():
                for i in range(count):
                    process_start(
                        workspace=workspace,
                        process_id=f"{prefix}-{i}",
                        definition="demo.greet",
                        input={"name": str(i)},
                        disposition="rerunnable",
                    )
            qs = Process.objects.filter(pk__startswith=f"{prefix}-")
            while qs.filter(status="running").exists():
                time.sleep(0.05)
            elapsed = time.perf_counter() - begin
            latencies = [(f - c).total_seconds() for c, f in qs.values_list("created_at", "finished_at")]
            return elapsed, latencies

        run_id = int(time.time())
        proc_seconds, latencies = run_batch(f"b{run_id}", args.n)
        proc_rate = args.n / proc_seconds
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]

        # 3. sleepers hold no slot
        with transaction.atomic():
            for i in range(args.sleepers):
                process_start(
                    workspace=workspace,
                    process_id=f"z{run_id}-{i}",
                    definition="demo.approval",
                    input={"sleep": 60},
                    disposition="rerunnable",
                )
        parked = Process.objects.filter(pk__startswith=f"z{run_id}-", wait_kind="timer")
        deadline = time.monotonic() + 120
        while parked.count() < args.sleepers and time.monotonic() < deadline:
            time.sleep(0.1)
        from django.db.models import Exists, OuterRef

        from lashops.core.models import Lease

        held = (
            Process.objects.filter(pk__startswith=f"z{run_id}-")
            .filter(Exists(Lease.objects.filter(scope="process", key=OuterRef("pk")).exclude(holder="")))
            .count()
        )
        after_seconds, after_latencies = run_batch(f"a{run_id}", 200)
        print(f"raw celery no-op tasks:   {args.n} in {raw_seconds:.2f}s = {raw_rate:.0f}/s")
        print(f"one-step processes:       {args.n} in {proc_seconds:.2f}s = {proc_rate:.0f}/s")
        print(f"ratio (processes / raw):  {proc_rate / raw_rate:.2f}  (target >= 1.0, floor 0.5)")
        print(f"start-to-completion p50:  {p50 * 1000:.0f} ms   p99: {p99 * 1000:.0f} ms")
        print(
            f"sleepers: {parked.count()}/{args.sleepers} parked on timers, {held} holding a lease; "
            f"200 one-step processes alongside them: {200 / after_seconds:.0f}/s, "
            f"p50 {statistics.median(after_latencies) * 1000:.0f} ms"
        )
    finally:
        for worker in workers:
            worker.stop()
        connection.close()


if __name__ == "__main__":
    main()
