"""Turn benchmark: N foreground turns on PostgreSQL with the scripted model, one tool call each
(calculator, then the answer), against a raw psycopg ``INSERT`` + ``COMMIT`` loop of N
iterations measured in the same run on the same database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/turns.py --turns 200

DATABASE_URL only says which server to use: the benchmark creates its own scratch database
(``lashops_bench`` by default), migrates it, and drops it at the end. It never writes to the
database named in the URL.

Commits per turn are counted twice:
* ``pg_stat_database.xact_commit`` of the scratch database, read before and after on a separate
  connection to the ``postgres`` maintenance database (every committed transaction, read-only
  autocommit SELECTs included; the turn's connection is closed first so its stats are flushed);
* a Django ``execute_wrapper`` plus a wrapped ``connection.commit``: outermost ``atomic`` commits
  and autocommit statements, split into writes and reads.

Targets: at most 4 write commits for a one-tool turn; a whole turn costs at most 10 raw commits.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALC = {"text": "Computing.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]}
ANSWER = {"text": "It is 42.", "usage": {"input_tokens": 100, "output_tokens": 20}}
WARMUP = 5


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def conninfo(url: str) -> str:
    """psycopg wants ``postgresql://``; Django's URL helper accepts ``postgres://`` too."""
    return url.replace("postgres://", "postgresql://", 1)


def xact_commit(admin, dbname: str, settle: float = 0.3) -> int:
    """The database's committed-transaction counter once it stops moving (stats flush lazily)."""
    last = None
    for _ in range(50):
        value = admin.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [dbname]).fetchone()[0]
        if value == last:
            return int(value)
        last = value
        time.sleep(settle)
    return int(last)


class CommitCounter:
    """Counts what the Django connection commits: outermost atomic blocks (``connection.commit``)
    and statements run in autocommit (each its own transaction)."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.atomic_commits = 0
        self.autocommit_writes = 0
        self.autocommit_reads = 0
        self.statements = 0
        self.db_seconds = 0.0
        self.sources: collections.Counter[str] = collections.Counter()
        self._commit = connection.commit

    @staticmethod
    def _caller() -> str:
        """The innermost project function on the stack (services.turn_start, core.services.lease_acquire...)."""
        for frame in reversed(traceback.extract_stack(limit=40)):
            path = frame.filename
            if "/site-packages/" in path or path.endswith("bench/turns.py"):
                continue
            if "/sessions_app/" in path or "/lashops/" in path:
                return f"{Path(path).parent.name}/{Path(path).stem}.{frame.name}"
        return "?"

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        if not self.connection.in_atomic_block:
            verb = sql.lstrip().split(None, 1)[0].upper()
            if verb == "SELECT" and "FOR UPDATE" not in sql.upper():
                self.autocommit_reads += 1
                self.sources[f"read   {self._caller()}"] += 1
            else:
                self.autocommit_writes += 1
                self.sources[f"write  {self._caller()}"] += 1
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.db_seconds += time.perf_counter() - t0

    def counting_commit(self) -> None:
        self.atomic_commits += 1
        self.sources[f"atomic {self._caller()}"] += 1
        t0 = time.perf_counter()
        self._commit()
        self.db_seconds += time.perf_counter() - t0

    @property
    def total(self) -> int:
        return self.atomic_commits + self.autocommit_writes + self.autocommit_reads


def raw_baseline(url: str, iterations: int) -> float:
    import psycopg

    with psycopg.connect(conninfo(url)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.commit()
        for _ in range(min(20, iterations)):  # warm the connection and the table
            conn.execute("INSERT INTO bench_raw (payload) VALUES (%s)", ["warm"])
            conn.commit()
        t0 = time.perf_counter()
        for i in range(iterations):
            conn.execute("INSERT INTO bench_raw (payload) VALUES (%s)", [f"row {i}"])
            conn.commit()
        elapsed = time.perf_counter() - t0
        conn.execute("DROP TABLE bench_raw")
        conn.commit()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="cProfile the measured turns (slower)")
    parser.add_argument("--database", default="lashops_bench", help="scratch database (created and dropped)")
    args = parser.parse_args()

    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/turns.py needs DATABASE_URL=postgres://... (the server to create a scratch database on)")
    if args.database in {"test", "postgres", "template0", "template1"} or args.database.startswith("test_"):
        sys.exit(f"refusing to use {args.database!r} as the scratch database")
    bench_url = with_database(server_url, args.database)

    import psycopg

    admin = psycopg.connect(conninfo(with_database(server_url, "postgres")), autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{args.database}"')
    try:
        run(args, bench_url, admin)
    finally:
        from django.db import connections

        connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.close()
        print(f"scratch database {args.database!r} dropped")


def run(args: argparse.Namespace, bench_url: str, admin) -> None:
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lashops.settings")
    os.environ.setdefault("DEBUG", "1")
    for name in ("CELERY_BROKER_URL", "REDIS_URL", "LASHOPS_TRACE_FILE"):
        os.environ.pop(name, None)  # in-process runner, in-memory layer, no trace: the turn itself
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from lashops.core.services import workspace_create
    from sessions_app.models import Node, Turn
    from sessions_app.services import session_open, turn_start

    call_command("migrate", verbosity=0, interactive=False)
    workspace = workspace_create(slug="bench-turns", name="bench")
    model = {"provider": "scripted", "model": "scripted-1", "parameters": {"script": [CALC, ANSWER]}}
    n = args.turns
    # One session per turn, opened up front: every turn does the same work (no growing transcript).
    sessions = [session_open(workspace=workspace, session_id=f"bench-{i}", model=model)[0] for i in range(n + WARMUP)]
    for session in sessions[:WARMUP]:
        turn_start(session=session, text="What is 6*7?")
    measured = sessions[WARMUP:]
    connection.close()
    before = xact_commit(admin, args.database)

    counter = CommitCounter(connection)
    connection.commit = counter.counting_commit
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    with connection.execute_wrapper(counter):
        for session in measured:
            turn = turn_start(session=session, text="What is 6*7?")
            if turn.final_text != "It is 42.":
                raise SystemExit(f"turn {turn.pk} did not finish as scripted: {turn.outcome} {turn.stop_reason}")
    elapsed = time.perf_counter() - t0
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(r"sessions_app|lashops|asgiref", 25)
        stats.sort_stats("tottime").print_stats(25)
    del connection.commit
    connection.close()  # the backend exits and flushes its statistics
    after = xact_commit(admin, args.database)

    committed = Turn.objects.filter(session__in=measured, status="committed").count()
    nodes = Node.objects.filter(session__in=measured).count()
    connection.close()
    raw_before = xact_commit(admin, args.database)
    raw_elapsed = raw_baseline(bench_url, n)
    raw_after = xact_commit(admin, args.database)

    per_turn = elapsed / n
    per_raw = raw_elapsed / n
    pg_commits = (after - before) / n
    writes = (counter.atomic_commits + counter.autocommit_writes) / n
    print(f"turns: {n} one-tool turns on PostgreSQL (scripted calculator then answer), {WARMUP} warm-up turns")
    print(f"  committed {committed}/{n}, nodes {nodes} ({nodes / n:.0f} per turn)")
    print(f"  wall {elapsed:.2f}s -> {n / elapsed:.1f} turns/s, {per_turn * 1000:.2f} ms/turn")
    print(
        f"  of which waiting on the database (statements + commits, main thread): {counter.db_seconds / n * 1000:.2f} ms"
    )
    print("commits per turn")
    print(f"  pg_stat_database.xact_commit: {pg_commits:.2f}  (every transaction, read-only ones included)")
    print(
        f"  execute_wrapper:              {counter.total / n:.2f}  = atomic {counter.atomic_commits / n:.2f}"
        f" + autocommit writes {counter.autocommit_writes / n:.2f} + autocommit reads {counter.autocommit_reads / n:.2f}"
        f"  ({counter.statements / n:.1f} statements)"
    )
    print(f"  write commits per turn:       {writes:.2f}  (target <= 4: {'OK' if writes <= 4 else 'MISSED'})")
    print("  where they come from (per turn; atomic = an outermost transaction.atomic() commit):")
    for source, count in sorted(counter.sources.items(), key=lambda item: (-item[1], item[0])):
        print(f"    {count / n:5.2f}  {source}")
    print("baseline: raw psycopg INSERT + COMMIT, same database, same iterations")
    print(
        f"  {n} iterations in {raw_elapsed:.3f}s -> {per_raw * 1000:.3f} ms/commit"
        f" (xact_commit delta {raw_after - raw_before}, sanity check for the counter)"
    )
    ratio = per_turn / per_raw
    print(f"ratio: one turn = {ratio:.1f} raw commits (target <= 10: {'OK' if ratio <= 10 else 'MISSED'})")


if __name__ == "__main__":
    main()
