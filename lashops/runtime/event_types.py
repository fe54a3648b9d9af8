"""The event types the turn machine emits (``TurnEvents.emit``). Knows nothing about Django;
lashops.core.event_types re-exports these with every other event type of the platform."""

from __future__ import annotations

# durable (stored with a cursor, replayed)
TURN_STARTED = "turn.started"
INPUT_ACCEPTED = "input.accepted"
TOOL_CALL_STARTED = "tool_call.started"
TOOL_CALL_COMPLETED = "tool_call.completed"
TURN_FINISHED = "turn.finished"
# live only (never stored)
TEXT_DELTA = "text.delta"
USAGE = "usage"
MODEL_REQUEST_STARTED = "model.request_started"
MODEL_RETRY = "model.retry"
MODEL_ATTEMPT_RESET = "model.attempt_reset"
