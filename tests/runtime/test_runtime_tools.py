"""Tools: the calculator, argument checking, the catalog, providers, spawn_agent."""

from __future__ import annotations

import pytest

from lashops.runtime.builtin_tools import MAX_SUBAGENT_DEPTH, CalculatorError, builtin_tools, evaluate
from lashops.runtime.memory import MemoryJournal
from lashops.runtime.tools import (
    Tool,
    ToolCatalog,
    ToolContext,
    ToolOutput,
    ToolProviderError,
    invoke_tool,
    load_tool_providers,
)
from lashops.runtime.types import ToolCall, Usage

from .helpers import Harness


def _ctx(**overrides) -> ToolContext:
    values = {
        "session_id": "s",
        "turn_id": "t",
        "call_id": "c",
        "idempotency_key": "turn:s:t/0/tool_attempt/c",
        "journal": MemoryJournal(),
    }
    values.update(overrides)
    return ToolContext(**values)


@pytest.mark.parametrize(
    ("expression", "value"),
    [("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 10", 1024), ("7 / 2", 3.5), ("-3 % 5", 2), ("sqrt(16)", 4.0)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os')", "open('x')", "a + 1", "2 ** 100000", "1/0", "[1][0]"])
def test_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expression)


def test_calculator_tool_reports_errors_as_results() -> None:
    tool = next(t for t in builtin_tools() if t.name == "calculator")
    output = invoke_tool(tool, ToolCall("c", "calculator", '{"expression": "1/0"}'), _ctx())
    assert output.is_error and "division by zero" in output.content
    assert invoke_tool(tool, ToolCall("c", "calculator", '{"expression": "6*7"}'), _ctx()).content == "42"


def test_handler_return_types_are_coerced() -> None:
    as_dict = Tool(name="d", description="", handler=lambda args, ctx: {"b": 1, "a": 2})
    output = invoke_tool(as_dict, ToolCall("c", "d", ""), _ctx())
    assert output.content == '{"a": 2, "b": 1}' and output.data == {"a": 2, "b": 1}
    as_output = Tool(name="o", description="", handler=lambda args, ctx: ToolOutput("x", child_usage=Usage(1, 2)))
    assert invoke_tool(as_output, ToolCall("c", "o", "{}"), _ctx()).child_usage == Usage(1, 2)


def test_non_object_arguments_are_rejected() -> None:
    tool = Tool(name="t", description="", handler=lambda args, ctx: "ran")
    output = invoke_tool(tool, ToolCall("c", "t", "[1, 2]"), _ctx())
    assert output.is_error and "JSON object" in output.content


def test_catalog_membership_is_availability_and_refresh_bumps_generation() -> None:
    catalog = ToolCatalog(builtin_tools())
    assert catalog.generation == 0
    assert set(catalog.effective(host={}, depth=0)) == {"calculator", "clock", "sleep"}
    catalog.remove("sleep")
    assert "sleep" not in catalog.effective(host={}, depth=0)
    assert catalog.refresh() == 1
    assert catalog.refresh([]) == 2 and len(catalog) == 0


def test_spawn_agent_is_offered_only_with_the_host_service_and_below_the_depth_cap() -> None:
    catalog = ToolCatalog(builtin_tools())
    host = {"spawn_agent": lambda **kwargs: {}}
    assert "spawn_agent" not in catalog.effective(host={}, depth=0)
    assert "spawn_agent" in catalog.effective(host=host, depth=MAX_SUBAGENT_DEPTH - 1)
    assert "spawn_agent" not in catalog.effective(host=host, depth=MAX_SUBAGENT_DEPTH)


def test_spawn_agent_returns_child_text_and_usage_into_the_turn(harness: Harness) -> None:
    calls = []

    def spawn(**kwargs):
        calls.append(kwargs)
        return {"final_text": "child says hi", "usage": {"input_tokens": 10, "output_tokens": 5}, "session_id": "c1"}

    script = [{"tool_calls": [{"name": "spawn_agent", "arguments": {"task": "say hi"}}]}, {"text": "done"}]
    result = harness.run(harness.config(script, depth=1), host={"spawn_agent": spawn})
    assert next(n for n in result.nodes if n.kind == "tool_result").payload["content"] == "child says hi"
    assert result.child_usage == Usage(input_tokens=10, output_tokens=5)
    assert result.total_usage == result.usage + Usage(input_tokens=10, output_tokens=5)
    assert calls[0]["depth"] == 2 and calls[0]["task"] == "say hi"
    assert calls[0]["idempotency_key"] == "turn:s1:t1/0/tool_attempt/call_0_0"


def test_load_tool_providers_imports_dotted_paths() -> None:
    tools = load_tool_providers(["lashops.runtime.builtin_tools:builtin_tools"])
    assert [t.name for t in tools] == ["calculator", "clock", "sleep", "spawn_agent"]
    assert load_tool_providers(["lashops.runtime.builtin_tools.builtin_tools"]) == tools


@pytest.mark.parametrize(
    "path", ["nope.module:x", "lashops.runtime.builtin_tools:missing", "lashops.runtime.builtin_tools:calculator"]
)
def test_load_tool_providers_reports_bad_paths(path: str) -> None:
    with pytest.raises(ToolProviderError):
        load_tool_providers([path])


def test_sleep_tool_honours_cancellation_quickly() -> None:
    tool = next(t for t in builtin_tools() if t.name == "sleep")
    output = invoke_tool(tool, ToolCall("c", "sleep", '{"seconds": 60}'), _ctx(is_cancelled=lambda: True))
    assert output.is_error and "cancelled" in output.content


def test_context_effect_runs_once_per_key() -> None:
    ctx = _ctx()
    runs = []
    first = ctx.effect("x", lambda: runs.append(1) or {"n": len(runs)})
    second = ctx.effect("x", lambda: runs.append(1) or {"n": len(runs)})
    assert first == second == {"n": 1} and len(runs) == 1


def test_build_catalog_defaults_to_the_builtins() -> None:
    from lashops.runtime.tools import build_catalog

    catalog = build_catalog(generation=3)
    assert catalog.names() == ["calculator", "clock", "sleep", "spawn_agent"] and catalog.generation == 3
