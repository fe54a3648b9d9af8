"""Usage records, the price table (Decimal cost on usage rows, turns and sessions), the usage
endpoint, subagent usage rolled into the parent, and the subagent depth limit."""

import json
from decimal import Decimal

import pytest

from sessions_app.models import ModelPrice, Node, Session, Turn, UsageRecord
from sessions_app.services import session_open, turn_start
from tests.support.scripted import scripted

pytestmark = pytest.mark.django_db(transaction=True)

SPAWN = {
    "text": "Delegating.",
    "tool_calls": [{"name": "spawn_agent", "arguments": {"task": "say hi"}}],
    "usage": {"input_tokens": 10, "output_tokens": 1},
}
REPLY = {"text": "hi", "usage": {"input_tokens": 100, "output_tokens": 20}}


@pytest.fixture
def price(db):
    return ModelPrice.objects.create(
        provider="scripted",
        model="scripted-1",
        input_per_mtok=Decimal("3"),
        output_per_mtok=Decimal("15"),
        cache_read_per_mtok=Decimal("0.3"),
        cache_write_per_mtok=Decimal("3.75"),
    )


def test_price_rows_cost_each_model_call_and_sum_into_turn_and_session(open_session, price):
    calc = {
        "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}],
        "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 500},
    }
    answer = {"text": "2", "usage": {"input_tokens": 100, "output_tokens": 20, "cache_write_input_tokens": 40}}
    session = open_session(calc, answer, {"text": "again", "usage": {"input_tokens": 7, "output_tokens": 3}})

    turn = turn_start(session=session, text="1+1?")

    # (1000*3 + 200*15 + 500*0.3) / 1e6 and (100*3 + 20*15 + 40*3.75) / 1e6
    costs = list(UsageRecord.objects.filter(turn=turn).order_by("step").values_list("cost_usd", flat=True))
    assert costs == [Decimal("0.006150"), Decimal("0.000750")]
    assert turn.cost_usd == Decimal("0.006900")
    second = turn_start(session=session, text="and again")
    assert second.cost_usd == Decimal("0.000066")  # 7*3 + 3*15 = 66 micro-dollars
    session.refresh_from_db()
    assert session.cost_usd == Decimal("0.006966")
    assert (session.input_tokens, session.output_tokens) == (1107, 223)
    assert session.cache_read_input_tokens == 500 and session.cache_write_input_tokens == 40


def test_a_model_without_a_price_row_costs_nothing(open_session, price):
    session, _ = session_open(
        workspace=open_session({"text": "x"}).workspace, session_id="unpriced", model=scripted(REPLY) | {"model": "m2"}
    )
    turn = turn_start(session=session, text="hi")
    assert turn.cost_usd == Decimal(0) and turn.input_tokens == 100
    assert UsageRecord.objects.get(turn=turn).model == "m2"


def test_a_price_edit_applies_to_later_turns_only(open_session, price):
    session = open_session(REPLY, REPLY)
    first = turn_start(session=session, text="one")
    ModelPrice.objects.filter(pk=price.pk).update(input_per_mtok=Decimal("30"))
    second = turn_start(session=session, text="two")
    assert first.cost_usd == Decimal("0.000600")  # 100*3 + 20*15
    assert second.cost_usd == Decimal("0.003300")  # 100*30 + 20*15
    first.refresh_from_db()
    assert first.cost_usd == Decimal("0.000600")


def test_usage_endpoint_breaks_usage_down_by_source_and_model(api, workspace, price):
    ModelPrice.objects.create(provider="scripted", model="scripted-2", input_per_mtok=1, output_per_mtok=2)
    session, _ = session_open(workspace=workspace, session_id="s1", model=scripted(REPLY))
    turn_start(session=session, text="one")
    # The host-supplied model wins on re-open: the next turn runs on scripted-2.
    session, _ = session_open(
        workspace=workspace, session_id="s1", model=scripted(REPLY, REPLY) | {"model": "scripted-2"}
    )
    turn_start(session=session, text="two")

    report = api.get("/api/sessions/s1/usage").json()

    rows = {(r["source"], r["model"]): r for r in report["by_source_and_model"]}
    assert set(rows) == {("turn", "scripted-1"), ("turn", "scripted-2")}
    assert rows[("turn", "scripted-1")]["calls"] == 1
    assert rows[("turn", "scripted-1")]["cost_usd"] == "0.000600"
    assert rows[("turn", "scripted-2")]["cost_usd"] == "0.000140"  # 100*1 + 20*2
    assert report["cost_usd"] == "0.000740"
    assert report["usage"]["input_tokens"] == 200 and report["child_usage"]["input_tokens"] == 0
    assert report["total_usage"]["output_tokens"] == 40


def test_child_usage_rolls_into_the_parent_turn_session_and_usage_report(api, workspace, price):
    session, _ = session_open(workspace=workspace, session_id="s1", model=scripted(SPAWN, REPLY))
    Session.objects.filter(pk="s1").update(depth=4)  # the child (depth 5) cannot spawn again
    session.refresh_from_db()

    turn = turn_start(session=session, text="delegate")

    child = Session.objects.get(parent_id="s1")
    assert child.depth == 5 and child.input_tokens == 110  # SPAWN (refused tool) + REPLY
    assert (turn.input_tokens, turn.output_tokens) == (110, 21)
    assert (turn.child_input_tokens, turn.child_output_tokens) == (110, 21)
    row = UsageRecord.objects.get(turn=turn, source="child")
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (110, 21, Decimal(0))
    report = api.get("/api/sessions/s1/usage").json()
    assert report["child_usage"]["input_tokens"] == 110
    assert report["total_usage"] == {
        "input_tokens": 220,
        "output_tokens": 42,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "reasoning_output_tokens": 0,
    }
    assert {r["source"] for r in report["by_source_and_model"]} == {"turn", "child"}
    committed = turn.session.workspace.events.get(type="turn.committed", session_id="s1")
    assert committed.data["total_usage"]["input_tokens"] == 220


def _offered_tools(trace_file) -> dict[str, list[str]]:
    offered: dict[str, list[str]] = {}
    for line in trace_file.read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "prompt_built":
            offered.setdefault(event["session_id"], event["tools"])
    return offered


def test_spawn_agent_is_not_offered_at_depth_5(workspace, settings, tmp_path):
    settings.LASHOPS_TRACE_FILE = str(tmp_path / "trace.jsonl")
    session, _ = session_open(workspace=workspace, session_id="deep", model=scripted(SPAWN, REPLY))
    Session.objects.filter(pk="deep").update(depth=5)
    session.refresh_from_db()

    turn = turn_start(session=session, text="delegate")

    assert "spawn_agent" not in _offered_tools(tmp_path / "trace.jsonl")["deep"]
    result = Node.objects.get(turn=turn, kind="tool_result")
    assert result.payload["is_error"] and "unknown tool 'spawn_agent'" in result.payload["content"]
    assert not Session.objects.filter(parent_id="deep").exists()
    assert turn.outcome == Turn.Outcome.FINISHED


def test_a_chain_of_subagents_stops_at_depth_5_and_the_root_counts_the_whole_tree(workspace, settings, tmp_path):
    settings.LASHOPS_TRACE_FILE = str(tmp_path / "trace.jsonl")
    session, _ = session_open(workspace=workspace, session_id="root", model=scripted(SPAWN, REPLY))

    turn = turn_start(session=session, text="delegate")

    depths = sorted(Session.objects.values_list("depth", flat=True))
    assert depths == [0, 1, 2, 3, 4, 5]
    offered = _offered_tools(tmp_path / "trace.jsonl")
    deepest = Session.objects.get(depth=5)
    assert "spawn_agent" not in offered[deepest.pk]
    assert all("spawn_agent" in offered[s.pk] for s in Session.objects.filter(depth__lt=5))
    # Every session spent 110/21 itself; the root's children carry the five below it.
    assert (turn.input_tokens, turn.child_input_tokens) == (110, 5 * 110)
    assert (turn.output_tokens, turn.child_output_tokens) == (21, 5 * 21)
