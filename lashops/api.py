"""The root NinjaAPI: authentication, the one error model, and every app's router."""

from __future__ import annotations

import json

from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import Status
from ninja.errors import AuthenticationError, HttpError, ValidationError

from lashops.core.api import router as core_router
from lashops.core.auth import api_key_auth, session_auth
from lashops.core.errors import LashOpsError
from lashops.core.health import health_report
from lashops.core.middleware import error_response
from lashops.core.openapi import LashOpsNinjaAPI
from lashops.core.schemas import HealthOut
from lashops.core.validation import BodyRejected, JsonBodyParser
from mobs_app.api import router as mobs_router
from processes_app.api import router as processes_router
from processes_app.api import triggers_router
from sessions_app.api import router as sessions_router

api = LashOpsNinjaAPI(
    title="LashOps API",
    version="1",
    description="Operations platform for durable LLM agents. Authenticate with `Authorization: Bearer <api key>`. "
    "No string in a request (body, keys of objects, query, path, form field or file name) may contain a NUL "
    "character or a lone UTF-16 surrogate, and numbers must be finite: such requests are refused with 422.",
    auth=[api_key_auth, session_auth],
    urls_namespace="api",
    parser=JsonBodyParser(),
)


def _field_path(loc: list | tuple) -> str:
    return ".".join(str(part) for part in loc)


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    details = [
        {"path": _field_path(err.get("loc", ())), "message": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors
    ]
    return error_response(422, "validation_error", "The request is not valid; see details.", details)


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        401,
        "unauthorized",
        "Authentication required: send 'Authorization: Bearer <api key>' or log in "
        "(with a CSRF token, and X-LashOps-Workspace when you belong to several workspaces).",
    )


@api.exception_handler(LashOpsError)
def on_domain_error(request: HttpRequest, exc: LashOpsError) -> HttpResponse:
    return error_response(exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, BodyRejected):
        return error_response(422, "validation_error", cause.message, cause.details)
    if isinstance(cause, json.JSONDecodeError) or str(exc).startswith("Cannot parse request body"):
        # ninja answers an unparseable body with a bare 400; we keep it in the validation model.
        where = (
            f": {cause.msg} at line {cause.lineno} column {cause.colno}"
            if isinstance(cause, json.JSONDecodeError)
            else ""
        )
        details = [{"path": "body", "message": f"Invalid JSON{where}", "type": "json_invalid"}]
        return error_response(422, "validation_error", "The request body is not valid JSON.", details)
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "throttled"}.get(
        exc.status_code, "http_error"
    )
    if "CSRF" in str(exc):
        code = "csrf_failed"
    return error_response(exc.status_code, code, str(exc))


@api.exception_handler(MultiPartParserError)
def on_bad_multipart(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
    details = [{"path": "body", "message": str(exc), "type": "multipart_invalid"}]
    return error_response(422, "validation_error", "The multipart request body cannot be read.", details)


@api.exception_handler(Http404)
def on_404(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "not_found", str(exc) or "No such resource.")


@api.exception_handler(ObjectDoesNotExist)
def on_missing(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "not_found", "No such resource.")


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(413, "payload_too_large", "The request body is too large.")


@api.get("/health", auth=None, response={200: HealthOut, 503: HealthOut}, tags=["platform"])
def health(request: HttpRequest):
    """Database, channel layer and runner/broker status, and versions. 503 when the database is down."""
    report = health_report()
    return Status(503 if report["status"] == "down" else 200, report)


api.add_router("/", core_router)
api.add_router("/processes", processes_router)
api.add_router("/triggers", triggers_router)
api.add_router("/sessions", sessions_router)
api.add_router("/mobs", mobs_router)
