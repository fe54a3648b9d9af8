"""Celery worker hooks: each pool process heartbeats (``lashops.core.heartbeat``) and tracks
the task it is running. Connected in ``CoreConfig.ready``; the signals only fire in workers."""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from lashops.core import heartbeat

_node: dict[str, Any] = {"name": "", "queues": []}
_tokens: dict[str, int] = {}


@signals.celeryd_after_setup.connect
def _remember_node(sender: str, instance: Any, **kwargs: Any) -> None:
    _node["name"] = sender
    try:
        _node["queues"] = sorted(instance.app.amqp.queues.consume_from)
    except Exception:
        _node["queues"] = sorted(instance.app.amqp.queues)


def _start() -> None:
    name = _node["name"] or "celery"
    heartbeat.start(kind="celery", worker_id=f"{name}/{os.getpid()}", queues=list(_node["queues"]))


@signals.worker_process_init.connect
def _pool_process_started(**kwargs: Any) -> None:
    _start()


@signals.worker_ready.connect
def _worker_ready(sender: Any = None, **kwargs: Any) -> None:
    pool = getattr(sender, "pool", None)
    if pool is None or "prefork" not in type(pool).__module__:
        _start()  # solo/threads pools run tasks in this process


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stopping(**kwargs: Any) -> None:
    heartbeat.stop()


@signals.task_prerun.connect
def _task_started(task_id: str = "", task: Any = None, kwargs: dict | None = None, **extra: Any) -> None:
    ids = heartbeat.work_ids(kwargs or {}) | {"task_id": task_id}
    _tokens[task_id] = heartbeat.begin(getattr(task, "name", "task"), **ids)


@signals.task_postrun.connect
def _task_finished(task_id: str = "", **extra: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        heartbeat.end(token)
