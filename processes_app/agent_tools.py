"""Process tools for a session's model: start a process, inspect it, signal it, cancel it.

Name this provider in ``LASHOPS_TOOL_PROVIDERS`` (``processes_app.agent_tools:process_tools``).
The session host passes ``host["workspace_id"]``; the calling session is ``ctx.session_id``.

* ``process_start`` grants the calling session a handle on the process it starts. Its id is
  derived from the tool attempt's replay key (``ctx.idempotency_key``) unless one is given,
  so a re-run after a crash finds the process it already started instead of starting another.
* ``process_status``, ``process_signal`` and ``process_cancel`` act only on processes the
  session holds a live grant for; any other id answers "no process" (nothing leaks across
  sessions). A signal carries the replay key, so a re-run does not queue it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from lashops.runtime.tools import Tool, ToolContext, ToolOutput

RECENT_EVENTS = 10


def _available(host: Mapping[str, Any], depth: int) -> bool:
    return host.get("workspace_id") is not None


def _workspace(ctx: ToolContext):
    from lashops.core.models import Workspace

    return Workspace.objects.get(pk=ctx.host["workspace_id"])


def _error(exc: Exception) -> ToolOutput:
    code = getattr(exc, "code", type(exc).__name__)
    message = getattr(exc, "message", str(exc))
    return ToolOutput.error(f"{code}: {message}")


def _granted(ctx: ToolContext, process_id: str):
    """The process, if the calling session holds a live grant on it; else ``None``."""
    from processes_app.models import Process

    return (
        Process.objects.filter(
            workspace_id=ctx.host["workspace_id"],
            pk=process_id,
            grants__session_id=ctx.session_id,
            grants__revoked_at__isnull=True,
        )
        .select_related("workspace")
        .first()
    )


def _not_granted(process_id: str) -> ToolOutput:
    return ToolOutput.error(f"not_found: no process {process_id!r} this session holds a handle on")


def _summary(process: Any) -> dict[str, Any]:
    return {
        "id": process.pk,
        "definition": process.definition_name,
        "status": process.status,
        "waiting": process.wait_kind or None,
        "wait_signal": process.wait_signal or None,
        "output": process.output,
        "error": process.error,
        "cancel_requested": process.cancel_requested_at is not None,
    }


def _start(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from lashops.core.errors import LashOpsError
    from processes_app.services import process_grant, process_start

    process_id = args.get("id") or f"p-{hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:40]}"
    workspace = _workspace(ctx)
    try:
        process, created = process_start(
            workspace=workspace,
            process_id=process_id,
            definition=args["definition"],
            input=args.get("input") or {},
            disposition=args.get("disposition", "rerunnable"),
            provenance={"session": ctx.session_id, "turn": ctx.turn_id},
            wake_session_id=ctx.session_id if args.get("wake") else "",
            grant_session_ids=[ctx.session_id],
            check_references=False,  # the calling session: of this workspace by construction
        )
        if not created:
            process_grant(workspace=workspace, process_id=process.pk, session_id=ctx.session_id, check_references=False)
    except LashOpsError as exc:
        return _error(exc)
    verb = "started" if created else "already started"
    return ToolOutput(content=f"{verb} process {process.pk} ({process.definition_name})", data=_summary(process))


def _status(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from processes_app.models import ProcessEvent

    process = _granted(ctx, args["process_id"])
    if process is None:
        return _not_granted(args["process_id"])
    recent = list(
        ProcessEvent.objects.filter(process=process).order_by("-seq").values("seq", "type", "data")[:RECENT_EVENTS]
    )
    data = _summary(process) | {"recent_events": recent[::-1]}
    text = f"process {process.pk}: {process.status}"
    if process.wait_kind:
        text += f", waiting on {process.wait_kind}" + (f" {process.wait_signal!r}" if process.wait_signal else "")
    if process.output is not None:
        text += f"; output {process.output}"
    if process.error:
        text += f"; error {process.error.get('code')}"
    return ToolOutput(content=text, data=data)


def _signal(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from lashops.core.errors import LashOpsError
    from processes_app.services import process_signal

    process = _granted(ctx, args["process_id"])
    if process is None:
        return _not_granted(args["process_id"])
    try:
        event = process_signal(
            workspace=process.workspace,
            process_id=process.pk,
            name=args["name"],
            payload=args.get("payload"),
            idempotency_key=ctx.idempotency_key[-200:],
        )
    except LashOpsError as exc:
        return _error(exc)
    return ToolOutput(content=f"signal {args['name']!r} queued for {process.pk}", data={"seq": event.seq})


def _cancel(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from lashops.core.errors import LashOpsError
    from processes_app.errors import ProcessFinished
    from processes_app.services import process_cancel

    process = _granted(ctx, args["process_id"])
    if process is None:
        return _not_granted(args["process_id"])
    try:
        process = process_cancel(
            workspace=process.workspace,
            process_id=process.pk,
            cascade=bool(args.get("cascade", False)),
            reason=args.get("reason", "") or f"cancelled by session {ctx.session_id}",
        )
    except ProcessFinished:
        process.refresh_from_db()  # cancelling twice (a re-run) or after it ended: report where it is
    except LashOpsError as exc:
        return _error(exc)
    return ToolOutput(content=f"process {process.pk}: {process.status}", data=_summary(process))


_ID = {"type": "string", "minLength": 1, "maxLength": 64}


def process_tools() -> list[Tool]:
    """The process tool provider."""
    return [
        Tool(
            name="process_start",
            description=(
                "Start a durable background process from a registered definition. You get a handle on it; "
                "with wake=true its emitted events come back to this session as input."
            ),
            handler=_start,
            parameters={
                "type": "object",
                "properties": {
                    "definition": {"type": "string", "minLength": 1},
                    "input": {"type": "object"},
                    "id": _ID,
                    "disposition": {"type": "string", "enum": ["rerunnable", "owner_bound"]},
                    "wake": {"type": "boolean"},
                },
                "required": ["definition"],
                "additionalProperties": False,
            },
            idempotent=True,
            available=_available,
        ),
        Tool(
            name="process_status",
            description="Inspect a process this session holds a handle on: status, wait, output, recent events.",
            handler=_status,
            parameters={
                "type": "object",
                "properties": {"process_id": _ID},
                "required": ["process_id"],
                "additionalProperties": False,
            },
            idempotent=True,
            concurrent_safe=True,
            available=_available,
        ),
        Tool(
            name="process_signal",
            description="Send a declared signal (with an optional JSON payload) to a process this session holds.",
            handler=_signal,
            parameters={
                "type": "object",
                "properties": {"process_id": _ID, "name": {"type": "string", "minLength": 1}, "payload": {}},
                "required": ["process_id", "name"],
                "additionalProperties": False,
            },
            idempotent=True,
            available=_available,
        ),
        Tool(
            name="process_cancel",
            description="Cancel a process this session holds (it stops at its next step boundary).",
            handler=_cancel,
            parameters={
                "type": "object",
                "properties": {"process_id": _ID, "reason": {"type": "string"}, "cascade": {"type": "boolean"}},
                "required": ["process_id"],
                "additionalProperties": False,
            },
            idempotent=True,
            available=_available,
        ),
    ]
