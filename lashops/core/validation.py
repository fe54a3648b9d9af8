"""Input checks at the edge of the JSON API, before any schema or service sees a value.

PostgreSQL refuses a NUL byte in text and a lone UTF-16 surrogate in any string, and JSON lets a
client send both (``"\\u0000"``, ``"\\ud800"``); Python's ``json`` reads ``1e400`` as ``inf`` and
accepts ``NaN``; a JSON array where an object belongs would be read as an empty object. Each of
these used to reach the database or a service and end as a 500. Here they are refused with 422
``validation_error``, with details naming the field (``body.metadata.a.0``, ``query.after``,
``path.session_id``, ``form.filename``, ``file.file``).

The JSON body parser (``JsonBodyParser``) covers bodies, query strings, form fields and uploaded
file names (ninja reads all four through it); ``ApiErrorMiddleware.process_view`` covers path
parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from ninja.errors import ValidationError
from ninja.parser import Parser

# The largest value a PostgreSQL bigint (and a SQLite integer) holds: the bound of every cursor,
# offset and count the API accepts.
BIGINT_MAX = 2**63 - 1
# Deeper JSON is refused: encoding it again for the database or the response recursed past
# Python's limit (a 500) at a few hundred levels, long before the body size limit.
MAX_JSON_DEPTH = 100


class BodyRejected(ValueError):
    """A JSON body refused before validation; ``details`` name the offending fields."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character (\\u0000)"
    for char in value:
        if "\ud800" <= char <= "\udfff":
            return "must not contain a lone UTF-16 surrogate"
    return None


def _problem(path: str, message: str, kind: str) -> dict[str, str]:
    return {"path": path, "message": message, "type": kind}


def json_problems(value: Any, path: str) -> Iterator[dict[str, str]]:
    """Every unstorable string (key or value) and non-finite number in a parsed JSON value, and
    nesting deeper than ``MAX_JSON_DEPTH``. Iterative, so the walk itself cannot exhaust the stack."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_JSON_DEPTH:
            yield _problem(where, f"nested deeper than {MAX_JSON_DEPTH} levels", "json_too_deep")
            return
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                yield _problem(where, problem, "string_unstorable")
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield _problem(where, "must be a finite number", "number_not_finite")
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key)
                if problem:
                    yield _problem(f"{where}.{key!r}", f"key {problem}", "string_unstorable")
                stack.append((f"{where}.{key}", child, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{where}.{index}", child, depth + 1) for index, child in enumerate(item))


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise BodyRejected(
            "The request body holds a number too large to represent.",
            [_problem("body", f"the number {text[:40]} is out of range", "number_not_finite")],
        )
    return number


def _no_constant(text: str) -> float:
    raise BodyRejected(
        "The request body is not valid JSON.",
        [_problem("body", f"{text} is not a JSON number", "json_invalid")],
    )


def parse_json_body(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object (or null, for an optional body), or ``BodyRejected`` /
    ``json.JSONDecodeError``."""
    try:
        data = json.loads(raw, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise BodyRejected(
            "The request body is nested too deeply.", [_problem("body", "nested too deeply", "json_too_deep")]
        )
    if data is not None and not isinstance(data, dict):
        raise BodyRejected(
            "The request body must be a JSON object.",
            [_problem("body", f"must be a JSON object, not {_json_type(data)}", "model_type")],
        )
    problems = list(json_problems(data, "body"))
    if problems:
        raise BodyRejected("The request body holds values that cannot be stored; see details.", problems)
    return data


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _location(data: MultiValueDict, request: HttpRequest) -> str:
    if data is request.GET:
        return "query"
    if data is getattr(request, "_files", None):
        return "file"
    return "form"


class JsonBodyParser(Parser):
    """ninja's parser, refusing what cannot be stored (see the module docstring)."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any] | None:  # type: ignore[override]  # None: no body; ninja accepts it
        return parse_json_body(request.body)

    def parse_querydict(self, data: MultiValueDict, list_fields: list[str], request: HttpRequest) -> dict[str, Any]:
        where = _location(data, request)
        errors = []
        for key, values in data.lists():
            for value in values:
                text = value.name or "" if isinstance(value, UploadedFile) else value
                problem = text_problem(key) or (text_problem(text) if isinstance(text, str) else None)
                if problem:
                    label = "file name" if isinstance(value, UploadedFile) else "value"
                    errors.append({"loc": (where, key), "msg": f"{label} {problem}", "type": "string_unstorable"})
                    break
        if errors:
            raise ValidationError(errors)
        return super().parse_querydict(data, list_fields, request)
