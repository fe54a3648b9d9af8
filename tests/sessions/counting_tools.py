"""A tool whose every real execution leaves a line in a file, so a test in another OS process
can count how often it ran."""

from lashops.runtime.tools import Tool, ToolOutput


def _tally(args: dict, ctx) -> ToolOutput:
    with open(args["file"], "a", encoding="utf-8") as handle:
        handle.write(f"{ctx.call_id}\n")
    return ToolOutput(content="tallied")


def tools() -> list[Tool]:
    return [
        Tool(
            name="tally",
            description="Append a line to a file (test tool).",
            handler=_tally,
            parameters={"type": "object", "properties": {"file": {"type": "string"}}, "required": ["file"]},
        )
    ]
