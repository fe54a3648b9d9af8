"""How many SQL statements one scripted one-tool turn costs, end to end: ``turn_start`` of a
foreground turn (admission, lease, the drive with one calculator call, the commit).

Statements are round trips: on PostgreSQL each is a client/server exchange inside the turn's
few transactions (bench/turns.py). The bound below catches a change that adds statements to the
common path; the breakdown printed with ``-s`` says where they come from.

Counted by ``CaptureQueriesContext`` in a transactional test (real BEGIN/COMMIT, on_commit
callbacks run), with the second turn of the workspace (its stream head exists):
before the statement diet, 45 on SQLite and 43 on PostgreSQL; after it, 26 on SQLite (the
stream head takes an UPDATE of its own before each event INSERT) and 24 on PostgreSQL. Since the
commit hook hands its data (``sessions_app.signals.CommittedTurn``), a session that is no mob
member costs mobs_app nothing: 24 on SQLite, 22 on PostgreSQL. The bounds are those figures, so
a change that adds a statement to a turn fails here.
"""

import collections
import traceback
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app.models import Turn
from sessions_app.services import turn_start
from tests.support.scripted import ANSWER, CALC

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: no test savepoints, on_commit runs

ROOT = Path(__file__).resolve().parents[2]
BOUND = {"sqlite": 24, "postgresql": 22}


def _caller() -> str:
    """The innermost project frame that issued the statement (sessions_app, mobs_app, lashops)."""
    for frame in reversed(traceback.extract_stack(limit=40)):
        path = Path(frame.filename)
        if "site-packages" in path.parts or path.name == Path(__file__).name:
            continue
        if ROOT in path.parents and path.parts[len(ROOT.parts)] in {"sessions_app", "mobs_app", "lashops"}:
            return f"{path.relative_to(ROOT).with_suffix('')}.{frame.name}"
    return "?"


def _kind(sql: str) -> str:
    words = sql.lstrip().split()
    verb = words[0].upper() if words else "?"
    if verb == "SELECT" and "FOR UPDATE" in sql.upper():
        return "SELECT FOR UPDATE"
    if verb == "WITH":
        return "WITH (cursor+INSERT)"
    if verb in {"SAVEPOINT", "RELEASE", "ROLLBACK"}:
        return "SAVEPOINT/RELEASE"
    return verb


def _turn_statements(session) -> tuple[Turn, list[str], collections.Counter]:
    callers: collections.Counter[str] = collections.Counter()

    def record(execute, sql, params, many, context):
        callers[f"{_kind(sql):<20} {_caller()}"] += 1
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(record):
        turn = turn_start(session=session, text="What is 6*7?")
    return turn, [q["sql"] for q in captured.captured_queries], callers


def test_a_one_tool_turn_costs_a_bounded_number_of_statements(open_session, settings):
    settings.LASHOPS_TRACE_FILE = ""
    open_session(CALC, ANSWER, session_id="warm")  # the stream head and caches exist already
    turn_start(session=open_session(CALC, ANSWER, session_id="warm"), text="warm up")
    session = open_session(CALC, ANSWER)

    turn, statements, callers = _turn_statements(session)

    assert turn.final_text == "It is 42."
    kinds = collections.Counter(_kind(sql) for sql in statements)
    print(f"\n{len(statements)} statements ({connection.vendor}):")
    for kind, count in kinds.most_common():
        print(f"  {count:3d}  {kind}")
    for source, count in sorted(callers.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {count:3d}  {source}")
    assert len(statements) <= BOUND[connection.vendor]


def test_a_turn_of_a_session_that_is_no_mob_member_costs_mobs_app_no_statement(open_session, settings):
    """The commit hook says whether the session is a mob member, so the mob receiver returns at
    once: before, it looked the session's continuity record up twice on every turn."""
    settings.LASHOPS_TRACE_FILE = ""
    session = open_session(CALC, ANSWER)

    turn, statements, callers = _turn_statements(session)

    assert turn.final_text == "It is 42."
    assert [sql for sql in statements if "mobs_app_" in sql] == []
    assert not [source for source in callers if "mobs_app/" in source]


def _session_reads(statements: list[str]) -> int:
    return sum(1 for sql in statements if _kind(sql).startswith("SELECT") and '"sessions_app_session"' in sql)


def test_a_turn_reads_the_session_row_once(open_session, settings):
    """Foreground: admission reads it; background: the drive reads it with the turn. Neither the
    drive nor the after-commit drain reads it again (before: three reads for a background turn)."""
    from django.db import transaction

    from sessions_app.services import _admit, turn_drive

    settings.LASHOPS_TRACE_FILE = ""
    session = open_session(CALC, ANSWER)
    turn, statements, _ = _turn_statements(session)
    assert turn.final_text == "It is 42."
    assert _session_reads(statements) == 1

    with transaction.atomic():  # admitted, never dispatched: driven below
        queued = _admit(
            open_session(CALC, ANSWER, session_id="bg"), text="What is 6*7?", source_key="", background=True
        )
    with CaptureQueriesContext(connection) as captured:
        driven = turn_drive(turn_id=queued.pk)
    assert driven.final_text == "It is 42."
    assert _session_reads([q["sql"] for q in captured.captured_queries]) == 1
