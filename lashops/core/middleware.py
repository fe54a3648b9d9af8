"""Keep everything under /api/ in the one JSON error model, whatever Django would have
rendered: oversized bodies (413), unknown paths (404), wrong methods (405) and crashes (500);
and refuse path parameters that cannot be stored (422) before a view looks them up."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from lashops.core import backpressure
from lashops.core.validation import text_problem

log = logging.getLogger(__name__)

_DEFAULT_MESSAGES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Authentication required: send 'Authorization: Bearer <api key>'."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
}


def error_response(status: int, code: str, message: str, details: object = None) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "details": details}}, status=status)


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        limit = settings.LASHOPS_API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(400, "bad_request", "Content-Length is not a number.")
        if length > limit:
            return error_response(
                413, "payload_too_large", f"The request body is {length} bytes; the limit is {limit}.", {"limit": limit}
            )
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            code, message = _DEFAULT_MESSAGES.get(response.status_code, ("error", "The request failed."))
            details = None
            if response.status_code == 405 and response.has_header("Allow"):
                details = {"allow": [m.strip() for m in response["Allow"].split(",")]}
            replaced = error_response(response.status_code, code, message, details)
            if response.has_header("Allow"):
                replaced["Allow"] = response["Allow"]
            return replaced
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable, view_args: tuple, view_kwargs: dict
    ) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        details = [
            {"path": f"path.{name}", "message": problem, "type": "string_unstorable"}
            for name, value in view_kwargs.items()
            if isinstance(value, str) and (problem := text_problem(value))
        ]
        if details:
            return error_response(422, "validation_error", "The request is not valid; see details.", details)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        if database_unreachable(exception):
            log.warning("database unreachable on %s %s: %s", request.method, request.path, exception)
            return database_unavailable_response()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "An internal error occurred; it has been logged.")


# SQLSTATEs of a database that cannot serve us right now: class 08 (connection exceptions),
# admin/crash shutdown, "the database system is starting up" and "too many connections".
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")
DATABASE_RETRY_AFTER_SECONDS = 5


def database_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be reached (an outage, a restart, a dropped
    connection), not that a query was wrong: a client should retry later, not report a bug."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    if type(cause).__module__.startswith("sqlite3"):
        message = str(cause).lower()
        return "locked" in message or "unable to open" in message
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    # psycopg reports a failed or lost connection with no SQLSTATE at all.
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def database_unavailable_response() -> JsonResponse:
    response = error_response(
        503,
        "database_unavailable",
        "The database cannot be reached right now; retry after the delay in Retry-After.",
        {"retry_after": DATABASE_RETRY_AFTER_SECONDS},
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class WebSocketDatabaseGuard:
    """ASGI middleware around the WebSocket stack: when the database cannot be reached while a
    socket is served (authentication, replay), the socket gets ``stream.error``
    ``database_unavailable`` and is closed with 1013 (try again later) instead of the handshake
    crashing. Any other error goes up as before."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        state = {"accepted": False, "closed": False}

        async def tracked_send(message: dict) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                state["accepted"] = True
            elif kind == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, receive, backpressure.wrap_send(tracked_send, send))
        except Exception as exc:
            if not database_unreachable(exc) or state["closed"]:
                raise
            log.warning("database unreachable on socket %s: %s", scope.get("path"), exc)
            if not state["accepted"]:
                await send({"type": "websocket.accept"})
            error = {
                "type": "stream.error",
                "data": {"code": "database_unavailable", "message": "The database cannot be reached; reconnect later."},
            }
            await send({"type": "websocket.send", "text": json.dumps(error)})
            await send({"type": "websocket.close", "code": 1013, "reason": "database_unavailable"})
