"""Component checks behind GET /api/health."""

from __future__ import annotations

import platform
import time
import uuid
from typing import Any

import celery
import channels
import django
import ninja
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

import lashops


def check_database() -> dict[str, Any]:
    started = time.monotonic()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as exc:
        return {"ok": False, "detail": {"vendor": connection.vendor, "error": str(exc)[:200]}}
    return {"ok": True, "detail": {"vendor": connection.vendor, "ms": round((time.monotonic() - started) * 1000, 2)}}


async def _layer_roundtrip(layer: Any) -> None:
    channel = await layer.new_channel()
    marker = uuid.uuid4().hex
    await layer.send(channel, {"type": "health.ping", "marker": marker})
    message = await layer.receive(channel)
    if message.get("marker") != marker:
        raise RuntimeError("channel layer returned a different message")


def check_channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "detail": {"error": "no channel layer configured"}}
    backend = f"{type(layer).__module__}.{type(layer).__name__}"
    started = time.monotonic()
    try:
        async_to_sync(_layer_roundtrip)(layer)
    except Exception as exc:
        return {"ok": False, "detail": {"backend": backend, "error": str(exc)[:200]}}
    return {"ok": True, "detail": {"backend": backend, "ms": round((time.monotonic() - started) * 1000, 2)}}


def check_runner() -> dict[str, Any]:
    mode = settings.LASHOPS_RUNNER
    if mode != "celery":
        return {"ok": True, "detail": {"mode": mode, "threads": settings.LASHOPS_RUNNER_THREADS}}
    try:
        replies = lashops.celery_app.control.ping(timeout=settings.LASHOPS_HEALTH_PING_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "detail": {"mode": mode, "error": str(exc)[:200], "workers": []}}
    workers = sorted(name for reply in replies for name in reply)  # type: ignore[union-attr]  # a list without a reply callback
    return {"ok": bool(workers), "detail": {"mode": mode, "workers": workers}}


def check_workers() -> dict[str, Any]:
    """Heartbeat counts by health; informational (a stale worker does not degrade health,
    the sweeper reclaims its work)."""
    from lashops.core.selectors import WORKER_HEALTH, worker_health, worker_list

    counts = dict.fromkeys(WORKER_HEALTH, 0)
    try:
        for row in worker_list():
            counts[worker_health(row)] += 1
    except Exception as exc:
        return {"ok": False, "detail": {"error": str(exc)[:200]}}
    return {"ok": True, "detail": counts}


def health_report() -> dict[str, Any]:
    database = check_database()
    layer = check_channel_layer()
    runner = check_runner()
    if not database["ok"]:
        status = "down"
    elif layer["ok"] and runner["ok"]:
        status = "ok"
    else:
        status = "degraded"
    return {
        "status": status,
        "database": database,
        "channel_layer": layer,
        "runner": runner,
        "workers": check_workers() if database["ok"] else {"ok": False, "detail": {}},
        "versions": {
            "lashops": lashops.__version__,
            "python": platform.python_version(),
            "django": django.get_version(),
            "django_ninja": ninja.__version__,
            "channels": channels.__version__,
            "celery": celery.__version__,
        },
    }
