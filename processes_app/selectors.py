"""Reads for processes and triggers."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from lashops.core.models import Lease, Workspace
from processes_app.models import (
    CronSchedule,
    Disposition,
    Process,
    ProcessEvent,
    ProcessStatus,
    TriggerEvent,
    TriggerOccurrence,
    TriggerSubscription,
    WaitKind,
)

LEASE_SCOPE = "process"


def _lease_rows() -> QuerySet[Lease]:
    return Lease.objects.filter(scope=LEASE_SCOPE, key=OuterRef("pk"))


def live_lease_q(now: datetime) -> Exists:
    return Exists(_lease_rows().filter(expires_at__gte=now).exclude(holder=""))


def runnable_processes(*, now: datetime) -> QuerySet[Process]:
    """Non-terminal rows a worker may claim now: not externally owned, not parked on
    something unmet, no live lease, no pending abandon request, and not a started
    owner-bound row whose holder vanished without releasing (the sweep decides those)."""
    due = Q(wait_kind=WaitKind.NONE) | Q(wait_kind__in=[WaitKind.TIMER, WaitKind.SIGNAL], wait_until__lte=now)
    crashed_owner = Q(disposition=Disposition.OWNER_BOUND, first_started_at__isnull=False) & Exists(
        _lease_rows().exclude(holder="")
    )
    return (
        Process.objects.filter(status=ProcessStatus.RUNNING, abandon_requested_at__isnull=True)
        .exclude(disposition=Disposition.EXTERNALLY_OWNED)
        .filter(due)
        .exclude(live_lease_q(now))
        .exclude(crashed_owner)
    )


def process_list(
    *,
    workspace: Workspace,
    status: str = "",
    kind: str = "",
    definition: str = "",
    session_id: str = "",
) -> QuerySet[Process]:
    qs = Process.objects.filter(workspace=workspace)
    if status:
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    if definition:
        qs = qs.filter(definition_name=definition)
    if session_id:
        qs = qs.filter(grants__session_id=session_id, grants__revoked_at__isnull=True)
    return qs.order_by("-created_at", "-pk")


def process_get(*, workspace: Workspace, process_id: str) -> Process | None:
    return Process.objects.filter(workspace=workspace, pk=process_id).prefetch_related("grants").first()


def process_events(*, process: Process, after_seq: int = 0, limit: int = 200) -> QuerySet[ProcessEvent]:
    return ProcessEvent.objects.filter(process=process, seq__gt=after_seq).order_by("seq")[:limit]


def process_lease(*, process_id: str) -> Lease | None:
    return Lease.objects.filter(scope=LEASE_SCOPE, key=process_id).first()


def trigger_events(*, workspace: Workspace) -> QuerySet[TriggerEvent]:
    return TriggerEvent.objects.filter(workspace=workspace).order_by("name")


def trigger_subscriptions(*, workspace: Workspace) -> QuerySet[TriggerSubscription]:
    return TriggerSubscription.objects.filter(workspace=workspace).select_related("event").order_by("id")


def trigger_occurrences(*, workspace: Workspace) -> QuerySet[TriggerOccurrence]:
    return (
        TriggerOccurrence.objects.filter(workspace=workspace)
        .select_related("event")
        .prefetch_related("deliveries")
        .order_by("-id")
    )


def cron_schedules(*, workspace: Workspace) -> QuerySet[CronSchedule]:
    return CronSchedule.objects.filter(workspace=workspace).select_related("event").order_by("name")


def process_workspaces(process_ids: set[str]) -> dict[str, int]:
    """``{process id: workspace id}``: the ``process`` lease scope and ``process_id`` task ids
    (registered with ``lashops.core.tenancy``)."""
    return dict(Process.objects.filter(pk__in=process_ids).values_list("pk", "workspace_id"))
