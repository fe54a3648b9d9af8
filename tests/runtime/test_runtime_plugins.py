"""Plugins: hooks, state snapshots and the tool-output budget."""

from __future__ import annotations

from lashops.runtime.plugins import (
    SessionPlugin,
    ToolOutputBudgetFactory,
    ToolOutputBudgetPlugin,
    build_session_plugins,
    default_plugin_factories,
    load_plugin_factories,
    truncate_output,
)
from lashops.runtime.tools import Tool, ToolOutput

from .helpers import Harness


def test_budget_truncates_by_lines_with_a_visible_marker() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    out, truncated = truncate_output(text, max_bytes=16 * 1024, max_lines=400)
    assert truncated
    assert out.startswith("line 0\n") and "line 399\n" in out and "line 400\n" not in out
    assert out.endswith("[... truncated: 5400 bytes / 600 lines omitted by tool-output budget ...]")


def test_budget_truncates_by_bytes() -> None:
    out, truncated = truncate_output("x" * 20000, max_bytes=16 * 1024, max_lines=400)
    assert truncated and out.startswith("x" * 16384 + "\n[... truncated: 3616 bytes")


def test_small_output_is_untouched() -> None:
    assert truncate_output("hello\nworld", max_bytes=100, max_lines=10) == ("hello\nworld", False)


def test_budget_plugin_applies_in_a_turn_and_snapshots_its_state(harness: Harness) -> None:
    harness.catalog.add(Tool(name="big", description="", handler=lambda args, ctx: "y\n" * 1000))
    script = [{"tool_calls": [{"name": "big", "arguments": {}}]}, {"text": "ok"}]
    plugins = build_session_plugins(default_plugin_factories(), session_id="s1")
    result = harness.run(
        harness.config(script), plugins=plugins, plugin_state={"tool_output_budget": {"truncated_calls": 2}}
    )
    content = next(n for n in result.nodes if n.kind == "tool_result").payload["content"]
    assert "omitted by tool-output budget" in content and content.count("y\n") == 400
    assert result.plugin_state == {"tool_output_budget": {"truncated_calls": 3}}
    # The journal keeps the raw output; the budget is reapplied on replay, so replays agree.
    raw = harness.journal.lookup("turn:s1:t1/0/tool_attempt/call_0_0")
    assert raw["content"].count("y\n") == 1000


def test_factory_options_configure_the_budget() -> None:
    plugin = ToolOutputBudgetFactory().build(session_id="s", options={"tool_output_max_lines": 3})
    assert isinstance(plugin, ToolOutputBudgetPlugin) and plugin.max_lines == 3


class Policy(SessionPlugin):
    id = "policy"

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.turns = 0

    def prompt_contributions(self) -> list[str]:
        return ["Never use the clock."]

    def tools(self) -> list[Tool]:
        return [Tool(name="plugin_tool", description="from a plugin", handler=lambda args, ctx: "plugin says hi")]

    def before_tool(self, call):
        self.seen.append(call.name)
        if call.name == "clock":
            return ToolOutput.error("blocked by policy")
        return None

    def after_turn(self, ctx, result) -> None:
        self.turns += 1

    def snapshot(self) -> dict:
        return {"turns": self.turns, "seen": list(self.seen)}

    def restore(self, state) -> None:
        self.turns = state["turns"]
        self.seen = list(state["seen"])


def test_plugin_hooks_contribute_prompt_tools_blocking_and_state(harness: Harness) -> None:
    seen_requests = []

    class Spy:
        name = "spy"

        def complete(self, request, *, on_text_delta):
            seen_requests.append(request)
            return harness.provider.complete(request, on_text_delta=on_text_delta)

    script = [
        {"tool_calls": [{"name": "clock", "arguments": {}}, {"name": "plugin_tool", "arguments": {}}]},
        {"text": "ok"},
    ]
    policy = Policy()
    result = harness.run(
        harness.config(script), provider=Spy(), plugins=[policy], plugin_state={"policy": {"turns": 4, "seen": []}}
    )
    assert "Never use the clock." in seen_requests[0].messages[0].content
    assert "plugin_tool" in {t.name for t in seen_requests[0].tools}
    contents = [n.payload["content"] for n in result.nodes if n.kind == "tool_result"]
    assert contents == ["blocked by policy", "plugin says hi"]
    assert harness.journal.lookup("turn:s1:t1/0/tool_attempt/call_0_0") is None  # blocked calls never ran
    assert result.plugin_state == {"policy": {"turns": 5, "seen": ["clock", "plugin_tool"]}}


def test_load_plugin_factories_accepts_classes_and_instances() -> None:
    factories = load_plugin_factories(["lashops.runtime.plugins:ToolOutputBudgetFactory"])
    assert factories[0].id == "tool_output_budget"
    plugins = build_session_plugins(factories, session_id="s")
    assert isinstance(plugins[0], ToolOutputBudgetPlugin)
