"""Keep credentials out of server logs.

``?token=<api key>`` (kept for WebSocket clients written before tickets) and ``?ticket=`` put a
secret in the request line, which uvicorn writes to its access log (``uvicorn.access``) and, for
WebSockets, to ``uvicorn.error`` ("WebSocket /ws/...?token=... [accepted]"). ``install()`` puts
a filter on those loggers that replaces such values with ``[redacted]``; ``lashops/asgi.py``
calls it, so ``uvicorn lashops.asgi:application`` (and any server importing the application)
never logs them. daphne logs paths without their query string.
"""

from __future__ import annotations

import logging
import re
from typing import Any

SECRET_PARAMS = ("token", "ticket", "api_key", "access_token")
REDACTED = "[redacted]"
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "gunicorn.access", "daphne.access")


def _name_pattern(name: str) -> str:
    # Each character as itself or percent-encoded: parse_qs decodes names, so ``?%74oken=`` is a token.
    return "".join(f"(?:{re.escape(c)}|%{ord(c):02x})" for c in name)


_names = "|".join(_name_pattern(name) for name in SECRET_PARAMS)
_secret_value = re.compile(rf"([?&;](?:{_names})(?:=|%3d))[^&;\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of secret query parameters replaced."""
    return _secret_value.sub(lambda m: m.group(1) + REDACTED, text) if "=" in text else text


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message and string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_redacted(value) for value in record.args)
        return True


def install(names: tuple[str, ...] = SERVER_LOGGERS) -> None:
    """Put the filter on the server loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())
