"""Writes for triggers: event declarations, subscriptions, occurrences (idempotent by
occurrence id) and their deliveries (exactly one process per occurrence and subscription),
and cron schedules as a trigger source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from lashops.core import event_types
from lashops.core.errors import Conflict, InvalidInput, NotFound
from lashops.core.events import publish
from lashops.core.models import Workspace
from processes_app.definitions import require_definition
from processes_app.models import (
    CronSchedule,
    Disposition,
    TriggerDelivery,
    TriggerEvent,
    TriggerOccurrence,
    TriggerSubscription,
)


def trigger_event_declare(
    *, workspace: Workspace, name: str, payload_schema: dict[str, Any] | None = None, description: str = ""
) -> TriggerEvent:
    """Declare (or update) a trigger event type and its payload schema."""
    if not name or len(name) > 100:
        raise InvalidInput("a trigger event needs a name of 1-100 characters")
    try:
        jsonschema.Draft202012Validator.check_schema(payload_schema or {})
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"invalid payload schema: {exc.message}", code="invalid_schema") from None
    event, _ = TriggerEvent.objects.update_or_create(
        workspace=workspace, name=name, defaults={"payload_schema": payload_schema or {}, "description": description}
    )
    return event


def _event(workspace: Workspace, name: str) -> TriggerEvent:
    event = TriggerEvent.objects.filter(workspace=workspace, name=name).first()
    if event is None:
        raise NotFound(f"no trigger event {name!r}")
    return event


def trigger_subscribe(
    *,
    workspace: Workspace,
    event_name: str,
    definition: str,
    input_template: Any = None,
    wake_session_id: str = "",
    disposition: str = Disposition.RERUNNABLE,
    name: str = "",
) -> TriggerSubscription:
    """Subscribe a process definition to a trigger event. A wake session must belong to the
    workspace (404 ``session_not_found``, naming ``body.wake_session``)."""
    from processes_app.services import require_sessions

    event = _event(workspace, event_name)
    require_sessions(workspace=workspace, references={"body.wake_session": wake_session_id})
    require_definition(definition)
    if disposition not in Disposition.values:
        raise InvalidInput(f"disposition must be one of {Disposition.values}")
    return TriggerSubscription.objects.create(
        workspace=workspace,
        event=event,
        name=name,
        definition_name=definition,
        input_template=input_template if input_template is not None else {"payload": "$payload"},
        wake_session_id=wake_session_id,
        disposition=disposition,
    )


def trigger_subscription_set_enabled(
    *, workspace: Workspace, subscription_id: int, enabled: bool
) -> TriggerSubscription:
    """Disable keeps already delivered work; enabling again only affects new occurrences."""
    sub = TriggerSubscription.objects.filter(workspace=workspace, pk=subscription_id).first()
    if sub is None:
        raise NotFound(f"no subscription {subscription_id}")
    sub.enabled = enabled
    sub.save(update_fields=["enabled"])
    return sub


def render_template(template: Any, *, payload: Any, occurrence_id: str) -> Any:
    """Replace ``"$payload"``, ``"$payload.a.b"`` and ``"$occurrence_id"`` strings anywhere in
    the template; everything else is copied as is."""
    if isinstance(template, dict):
        return {k: render_template(v, payload=payload, occurrence_id=occurrence_id) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, payload=payload, occurrence_id=occurrence_id) for v in template]
    if template == "$occurrence_id":
        return occurrence_id
    if isinstance(template, str) and (template == "$payload" or template.startswith("$payload.")):
        value = payload
        for part in template.split(".")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return template


def occurrence_emit(
    *, workspace: Workspace, event_name: str, occurrence_id: str, payload: Any = None, source: str = "api"
) -> tuple[TriggerOccurrence, bool]:
    """Record an occurrence and, in the same transaction, one delivery and one process per
    enabled subscription. Idempotent by ``occurrence_id``: a repeat with the same payload
    returns the first; a different payload is a conflict. Returns ``(occurrence, created)``."""
    from processes_app.services import process_start

    event = _event(workspace, event_name)
    payload = {} if payload is None else payload
    if not occurrence_id or len(occurrence_id) > 200:
        raise InvalidInput("occurrence_id must be 1-200 characters")
    errors = list(jsonschema.Draft202012Validator(event.payload_schema or {}).iter_errors(payload))
    if errors:
        raise InvalidInput(
            f"payload does not match the schema of {event_name!r}",
            code="invalid_payload",
            details=[{"path": "/".join(str(p) for p in e.path), "message": e.message} for e in errors],
        )
    existing = TriggerOccurrence.objects.filter(workspace=workspace, occurrence_id=occurrence_id).first()
    if existing is not None:
        return _same_occurrence(existing, event, payload), False
    try:
        with transaction.atomic():
            occurrence = TriggerOccurrence.objects.create(
                workspace=workspace, event=event, occurrence_id=occurrence_id, payload=payload, source=source
            )
            started = []
            for sub in event.subscriptions.filter(enabled=True).order_by("pk"):
                process_id = f"trg-{occurrence.pk}-{sub.pk}"
                TriggerDelivery.objects.create(occurrence=occurrence, subscription=sub, process_id=process_id)
                process_start(
                    workspace=workspace,
                    process_id=process_id,
                    definition=sub.definition_name,
                    input=render_template(sub.input_template, payload=payload, occurrence_id=occurrence_id),
                    disposition=sub.disposition,
                    provenance={"host": "trigger", "occurrence": occurrence_id, "subscription": sub.pk},
                    wake_session_id=sub.wake_session_id,
                    check_references=False,  # checked when subscribed; a session deleted since gets nothing
                )
                started.append(process_id)
            publish(
                workspace=workspace,
                type=event_types.TRIGGER_OCCURRED,
                subject={"trigger": event.name, "occurrence": occurrence_id},
                data={"source": source, "processes": started},
            )
    except IntegrityError:
        existing = TriggerOccurrence.objects.filter(workspace=workspace, occurrence_id=occurrence_id).first()
        if existing is None:
            raise
        return _same_occurrence(existing, event, payload), False
    return occurrence, True


def _same_occurrence(existing: TriggerOccurrence, event: TriggerEvent, payload: Any) -> TriggerOccurrence:
    if existing.event_id != event.pk or existing.payload != payload:
        raise Conflict(
            f"occurrence {existing.occurrence_id!r} was emitted with a different event or payload",
            code="occurrence_conflict",
        )
    return existing


# --- cron -------------------------------------------------------------------------------

_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


def parse_cron(expr: str) -> list[set[int]]:
    """Five fields (minute hour day-of-month month day-of-week, UTC) with ``*``, ``a-b``,
    ``*/n``, ``a-b/n`` and lists. Day-of-week 0 and 7 are Sunday."""
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidInput(f"a cron expression has five fields, got {expr!r}", code="invalid_cron")
    out: list[set[int]] = []
    for text, (lo, hi) in zip(fields, _RANGES, strict=True):
        values: set[int] = set()
        for part in text.split(","):
            body, _, step_text = part.partition("/")
            try:
                step = int(step_text) if step_text else 1
                if body == "*":
                    start, end = lo, hi
                elif "-" in body:
                    a, b = body.split("-", 1)
                    start, end = int(a), int(b)
                else:
                    start = int(body)
                    end = hi if step_text else start
            except ValueError:
                raise InvalidInput(f"cannot read cron field {text!r} in {expr!r}", code="invalid_cron") from None
            top = 7 if hi == 6 else hi
            if step < 1 or start < lo or end > top or start > end:
                raise InvalidInput(f"cron field {text!r} is out of range {lo}-{hi}", code="invalid_cron")
            values.update(v % 7 if hi == 6 else v for v in range(start, end + 1, step))
        out.append(values)
    return out


def cron_next(expr: str, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (UTC, minute resolution)."""
    minutes, hours, doms, months, dows = parse_cron(expr)
    dom_any = len(doms) == 31
    dow_any = len(dows) == 7
    t = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(600_000):
        if t.month not in months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            continue
        dow = (t.weekday() + 1) % 7  # cron: Sunday is 0
        if dom_any and dow_any:
            day_ok = True
        elif dom_any:
            day_ok = dow in dows
        elif dow_any:
            day_ok = t.day in doms
        else:
            day_ok = t.day in doms or dow in dows
        if not day_ok:
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if t.hour not in hours:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        if t.minute not in minutes:
            t += timedelta(minutes=1)
            continue
        return t
    raise InvalidInput(f"cron expression {expr!r} never fires", code="invalid_cron")


def schedule_save(
    *,
    workspace: Workspace,
    name: str,
    event_name: str,
    cron: str,
    payload: Any = None,
    enabled: bool = True,
) -> CronSchedule:
    """Create or update a cron schedule (keyed by name) and compute its next tick."""
    event = _event(workspace, event_name)
    next_run = cron_next(cron, timezone.now())
    schedule, _ = CronSchedule.objects.update_or_create(
        workspace=workspace,
        name=name,
        defaults={
            "event": event,
            "cron": cron,
            "payload": payload or {},
            "enabled": enabled,
            "next_run_at": next_run,
        },
    )
    return schedule


def schedules_tick(*, now: datetime | None = None) -> int:
    """Emit one occurrence for every due schedule and move it to its next tick. Missed ticks
    (scheduler down) are not replayed one by one: the schedule fires once and moves on.
    The occurrence id ``cron:<schedule>:<tick>`` makes a double tick harmless."""
    now = now or timezone.now()
    for schedule in CronSchedule.objects.filter(enabled=True, next_run_at__isnull=True):
        try:
            CronSchedule.objects.filter(pk=schedule.pk).update(next_run_at=cron_next(schedule.cron, now))
        except InvalidInput:
            CronSchedule.objects.filter(pk=schedule.pk).update(enabled=False)
    emitted = 0
    due_ids = list(
        CronSchedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("pk").values_list("pk", flat=True)
    )
    for pk in due_ids:
        with transaction.atomic():
            qs = CronSchedule.objects.select_related("workspace", "event")
            if connection.vendor == "postgresql":
                qs = qs.select_for_update(skip_locked=True, of=("self",))
            schedule = qs.filter(pk=pk, enabled=True, next_run_at__lte=now).first()  # type: ignore[assignment]  # None checked below
            if schedule is None:
                continue
            tick = schedule.next_run_at
            occurrence_emit(
                workspace=schedule.workspace,
                event_name=schedule.event.name,
                occurrence_id=f"cron:{schedule.name}:{tick:%Y%m%dT%H%MZ}",
                payload=schedule.payload,
                source="cron",
            )
            CronSchedule.objects.filter(pk=pk).update(last_run_at=tick, next_run_at=cron_next(schedule.cron, now))
            emitted += 1
    return emitted
