"""Built-in process definitions: the examples ``make demo`` runs, and the definition that
runs a subagent turn as a ``session_turn`` process."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from processes_app.context import ProcessContext
from processes_app.definitions import process_definition


@process_definition("demo.greet", description="One step: greets whoever is named in the input.")
def greet(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    text = ctx.step("compose", lambda: f"Hello, {input.get('name', 'world')}!")
    return {"greeting": text}


@process_definition(
    "demo.approval",
    signals={
        "approve": {
            "type": "object",
            "properties": {"approved": {"type": "boolean"}, "by": {"type": "string"}},
            "required": ["approved"],
            "additionalProperties": False,
        }
    },
    description="Prepares a request, sleeps, then waits for an 'approve' signal.",
)
def approval(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    request = ctx.step("prepare", lambda: {"item": input.get("item", "a thing"), "at": timezone.now().isoformat()})
    ctx.emit("approval.requested", {"item": request["item"]})
    ctx.sleep(float(input.get("sleep", 2)))
    decision = ctx.wait_signal("approve", timeout=input.get("timeout"))
    if decision is None:
        return {"request": request, "approved": False, "reason": "timed out"}
    ctx.emit("approval.decided", decision)
    return {"request": request, "approved": bool(decision["approved"]), "by": decision.get("by", "")}


@process_definition("demo.fanout", description="Starts one demo.greet child per name and collects the greetings.")
def fanout(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    children = [ctx.start_child("demo.greet", {"name": name}) for name in input.get("names", ["Ada", "Grace"])]
    results = [ctx.await_child(child) for child in children]
    return {"greetings": [r["output"]["greeting"] for r in results if r["status"] == "completed"]}


@process_definition("agent.turn", description="A subagent: runs one agent turn in a session.")
def agent_turn(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    return ctx.run_agent_turn(session_id=input["session"], input=input["task"])
