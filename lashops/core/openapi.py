"""The statuses every operation can answer, written into the OpenAPI document once, here.

Routers declare the outcomes their own logic produces (200/201/202, a domain 404 or 409); the
edge adds the rest to every operation, whatever a router remembered: 401 without credentials,
403 for a browser session without its CSRF token (unsafe methods), 404 for ids in the path,
413 for an oversized body, 422 for a request that does not validate and 503 while the database
cannot be reached. Each is documented with the one error model.

It also states the edge's text rule on every string the document types: no NUL character (see
``lashops.core.validation``). Free-form JSON values cannot carry a pattern; the API description
says the rule holds there too.
"""

from __future__ import annotations

from typing import Any

from ninja import NinjaAPI

from lashops.core.schemas import ErrorOut

UNSAFE_METHODS = {"post", "put", "patch", "delete"}
NO_NUL = r"^[^\x00]*$"

DESCRIPTIONS = {
    "401": "No valid credentials (``unauthorized``).",
    "403": "A logged-in browser session without a valid CSRF token (``csrf_failed``).",
    "404": "No such resource in this workspace (``not_found``).",
    "413": "The request body is larger than the limit (``payload_too_large``).",
    "422": "The request does not validate (``validation_error``; details name each field).",
    "503": "The database cannot be reached (``database_unavailable``); retry after ``Retry-After``.",
}


def edge_statuses(method: str, operation: dict[str, Any]) -> list[str]:
    """The statuses the edge itself can answer for one operation of the document."""
    statuses = ["503"]
    if operation.get("security"):
        statuses.append("401")
        if method in UNSAFE_METHODS:
            statuses.append("403")
    parameters = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in parameters):
        statuses.append("404")
    if operation.get("requestBody"):
        statuses += ["413", "422"]
    elif parameters:
        statuses.append("422")
    return statuses


def _state_text_rule(node: Any) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "string" and not item.keys() & {"pattern", "format", "enum", "const"}:
                item["pattern"] = NO_NUL
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def document_edge_statuses(schema: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{ErrorOut.__name__}"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault(ErrorOut.__name__, ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}"))
    for name, sub in ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs", {}).items():
        components.setdefault(name, sub)
    components[ErrorOut.__name__].pop("$defs", None)
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in edge_statuses(method, operation):
                responses.setdefault(
                    status,
                    {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ref}}},
                )
    _state_text_rule(schema.get("paths", {}))
    _state_text_rule(components)
    return schema


class LashOpsNinjaAPI(NinjaAPI):
    """NinjaAPI whose OpenAPI document lists the edge's statuses on every operation."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        return document_edge_statuses(super().get_openapi_schema(*args, **kwargs))
