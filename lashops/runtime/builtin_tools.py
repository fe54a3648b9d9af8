"""Built-in tools that work offline: ``calculator``, ``clock``, ``sleep`` and ``spawn_agent``.

``builtin_tools()`` is itself a tool provider (``lashops.runtime.builtin_tools:builtin_tools``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from lashops.runtime.tools import Tool, ToolContext, ToolOutput
from lashops.runtime.types import Usage

MAX_SUBAGENT_DEPTH = 5
MAX_SLEEP_SECONDS = 24 * 3600

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Number]] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class CalculatorError(ValueError):
    pass


def evaluate(expression: str) -> int | float:
    """Evaluate arithmetic safely: numbers, + - * / // % **, parentheses, a few functions."""
    if len(expression) > 500:
        raise CalculatorError("expression too long")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.msg}") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return cast(Number, node.value)  # int or float: the type check above
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise CalculatorError("exponent too large")
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args))
    raise CalculatorError(f"unsupported syntax: {ast.dump(node)[:60]}")


def _calculator(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    try:
        value = evaluate(args["expression"])
    except (CalculatorError, TypeError, ValueError, OverflowError) as exc:
        return ToolOutput.error(f"calculator: {exc}")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return ToolOutput(content=str(value), data={"result": value})


def _clock(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    # Journaled, so a re-run of this call after a crash reports the same instant.
    outcome = ctx.effect("now", lambda: {"utc": datetime.now(UTC).isoformat(timespec="seconds")})
    return ToolOutput(content=outcome["utc"], data=outcome)


def _sleep(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    seconds = float(args["seconds"])
    if ctx.sleep(seconds):
        return ToolOutput(content=f"slept {seconds:g} seconds", data={"seconds": seconds})
    return ToolOutput.error("sleep cancelled")


def _spawn_agent(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    spawn = ctx.host["spawn_agent"]
    answer: Mapping[str, Any] = spawn(
        task=args["task"],
        system_prompt=args.get("system_prompt"),
        parent_session_id=ctx.session_id,
        parent_turn_id=ctx.turn_id,
        call_id=ctx.call_id,
        idempotency_key=ctx.idempotency_key,
        depth=ctx.depth + 1,
    )
    usage = answer.get("usage")
    child_usage = usage if isinstance(usage, Usage) else Usage.from_dict(usage)
    data = {"final_text": answer.get("final_text", ""), "session_id": answer.get("session_id")}
    return ToolOutput(
        content=str(answer.get("final_text") or ""),
        is_error=bool(answer.get("is_error", False)),
        data=data,
        child_usage=child_usage,
    )


def _spawn_available(host: Mapping[str, Any], depth: int) -> bool:
    return callable(host.get("spawn_agent")) and depth < MAX_SUBAGENT_DEPTH


calculator = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, abs, round, min, max, pi, e).",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 7"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    handler=_calculator,
    idempotent=True,
    concurrent_safe=True,
)

clock = Tool(
    name="clock",
    description="The current date and time in UTC (ISO 8601).",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    handler=_clock,
    idempotent=True,
    concurrent_safe=True,
)

sleep = Tool(
    name="sleep",
    description="Wait for a number of seconds (durable: survives a worker restart).",
    parameters={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECONDS}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
    handler=_sleep,
    idempotent=True,
    concurrent_safe=True,
)

spawn_agent = Tool(
    name="spawn_agent",
    description="Delegate a task to a sub-agent and get its final answer.",
    parameters={
        "type": "object",
        "properties": {
            "task": {"type": "string", "minLength": 1, "description": "What the sub-agent should do."},
            "system_prompt": {"type": "string", "description": "Optional system prompt for the sub-agent."},
        },
        "required": ["task"],
        "additionalProperties": False,
    },
    handler=_spawn_agent,
    idempotent=False,
    concurrent_safe=True,
    available=_spawn_available,
)


def builtin_tools() -> list[Tool]:
    """The built-in tool provider."""
    return [calculator, clock, sleep, spawn_agent]
