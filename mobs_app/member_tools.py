"""Member tools for the runtime engine: list peers and send a peer message. Name this provider
in ``LASHOPS_TOOL_PROVIDERS`` (``mobs_app.member_tools:member_tools``). The member is found from
the calling session (its continuity record), so no host service is needed."""

from __future__ import annotations

from typing import Any

from lashops.runtime.tools import Tool, ToolContext, ToolOutput

NOT_A_MEMBER = "this session is not a mob member"


def _peers(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from mobs_app.messaging import identity_for_session, peers_list

    me = identity_for_session(session_id=ctx.session_id)
    if me is None:
        return ToolOutput.error(NOT_A_MEMBER)
    peers = peers_list(identity=me)
    lines = [f"- {p['key']} ({p['profile']}): {p['description'] or p['display_name']}" for p in peers]
    return ToolOutput(content="\n".join(lines) or "no peers", data={"peers": peers})


def _send(args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
    from lashops.core.errors import LashOpsError
    from mobs_app.messaging import identity_for_session, peer_send

    me = identity_for_session(session_id=ctx.session_id)
    if me is None:
        return ToolOutput.error(NOT_A_MEMBER)
    try:
        # The tool attempt's replay key makes a re-run after a crash deliver once.
        accepted = peer_send(sender=me, to=args["to"], text=args["text"], idempotency_key=ctx.idempotency_key[-200:])
    except LashOpsError as exc:
        return ToolOutput.error(f"{exc.code}: {exc.message}")
    return ToolOutput(content=f"sent to {args['to']} ({accepted['cursor']})", data=accepted)


def member_tools() -> list[Tool]:
    return [
        Tool(
            name="mob_peers",
            description="List the peers you are wired to in your mob (key, role, description).",
            handler=_peers,
            idempotent=True,
            concurrent_safe=True,
        ),
        Tool(
            name="mob_send_message",
            description="Send a message to a peer: 'key' for your mob, 'key::mob' for another mob.",
            handler=_send,
            parameters={
                "type": "object",
                "properties": {"to": {"type": "string", "minLength": 1}, "text": {"type": "string", "minLength": 1}},
                "required": ["to", "text"],
                "additionalProperties": False,
            },
            idempotent=True,
        ),
    ]
