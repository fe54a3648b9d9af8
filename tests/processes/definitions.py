"""Process definitions used by the tests (also loaded by the Celery workers the tests start,
through LASHOPS_PROCESS_DEFINITIONS=tests.processes.definitions)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from processes_app.context import ProcessContext
from processes_app.definitions import process_definition
from tests.support.polling import wait_until


def append_line(path: str, line: str) -> int:
    """An external side effect we can count: one line per execution."""
    with open(path, "a") as fh:
        fh.write(f"{line} {os.getpid()}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return len(Path(path).read_text().splitlines())


def wait_for_file(path: str, timeout: float = 60) -> None:
    wait_until(lambda: os.path.exists(path), timeout, interval=0.05, message=f"{path} did not appear")


@process_definition("test.one_step")
def one_step(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    return {"value": ctx.step("double", lambda: input.get("n", 1) * 2)}


@process_definition("test.counted")
def counted(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """Steps that append to a file (the external counter); optional gate before step two."""
    log = input["log"]
    first = ctx.step("first", append_line, log, f"{ctx.process_id} first")
    if input.get("gate"):
        ctx.step("gate", wait_for_file, input["gate"])
    time.sleep(input.get("pause", 0))
    second = ctx.step("second", append_line, log, f"{ctx.process_id} second")
    third = ctx.step("third", append_line, log, f"{ctx.process_id} third")
    return {"lines": [first, second, third]}


@process_definition("test.sleeper")
def sleeper(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    before = ctx.step("before", lambda: "slept")
    ctx.sleep(input.get("seconds", 2))
    after = ctx.step("after", lambda: "woke")
    return {"before": before, "after": after}


@process_definition(
    "test.signals",
    signals={"go": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}, "stop": {}},
)
def signals(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    if input.get("gate"):
        ctx.step("gate", wait_for_file, input["gate"])
    got = [ctx.wait_signal("go", timeout=input.get("timeout")) for _ in range(input.get("count", 1))]
    return {"got": got}


@process_definition("test.parent")
def parent(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    child = ctx.start_child(input.get("child", "test.one_step"), input.get("child_input", {"n": 21}))
    result = ctx.await_child(child)
    return {"child": child, "result": result}


@process_definition("test.emitter")
def emitter(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    ctx.emit("progress", {"pct": 50})
    return {"done": True}


@process_definition("test.fails")
def fails(ctx: ProcessContext, input: dict[str, Any]) -> None:
    ctx.step("ok", lambda: 1)
    raise RuntimeError("boom")


@process_definition("test.flexible")
def flexible(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """Its step name comes from a file, so a test can change the code between runs."""
    name = Path(input["name_file"]).read_text().strip()
    ctx.step(name, lambda: 1)
    ctx.sleep(input.get("seconds", 0))
    return {"name": name}


class SimulatedCrash(BaseException):
    """Escapes the runner like a killed worker would: nothing after it is written."""


def crash_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        raise SimulatedCrash(marker)
    return "survived"


@process_definition("test.emit_then_crash")
def emit_then_crash(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """Emits to its wake target, then dies once before finishing (``input["marker"]``)."""
    ctx.emit("progress", {"pct": 50})
    return {"after": ctx.step("maybe_crash", crash_once, input["marker"])}


def paced_line(path: str, line: str, pause: float) -> int:
    """A slow non-idempotent step: it takes ``pause`` seconds, then counts itself in ``path``."""
    time.sleep(pause)
    return append_line(path, line)


@process_definition("test.paced")
def paced(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """``steps`` slow steps, each counting its executions in a file outside the database."""
    lines = [
        ctx.step(f"s{i}", paced_line, input["log"], f"{ctx.process_id} s{i}", input.get("pause", 0.1))
        for i in range(input.get("steps", 10))
    ]
    return {"steps": len(lines)}


# Callables a test registers by name for ``test.hooked`` (in-process drives only).
HOOKS: dict[str, Any] = {}


@process_definition("test.hooked")
def hooked(ctx: ProcessContext, input: dict[str, Any]) -> dict[str, Any]:
    """Three counted steps; the middle one also calls ``HOOKS[input["hook"]]`` (say, stops the database)."""
    log = input["log"]
    ctx.step("before", append_line, log, f"{ctx.process_id} before")

    def middle() -> int:
        HOOKS[input["hook"]]()
        return append_line(log, f"{ctx.process_id} middle")

    ctx.step("middle", middle)
    ctx.step("after", append_line, log, f"{ctx.process_id} after")
    return {"done": True}
