"""Durable background processes: the process record, its append-only event log, handle
grants, and the trigger tables (event declarations, subscriptions, occurrences,
deliveries, cron schedules).

The lease of a running process lives in ``lashops.core.models.Lease`` (scope ``process``,
key = process id); its journal lives in ``lashops.core.models.Effect`` (scope
``process:<id>``). This app never keeps a second copy of either.
"""

from __future__ import annotations

from django.db import models

from lashops.core.models import Workspace


class ProcessKind(models.TextChoices):
    DEFINITION = "definition"
    TOOL_CALL = "tool_call"
    SESSION_TURN = "session_turn"
    EXTERNAL = "external"


class Disposition(models.TextChoices):
    RERUNNABLE = "rerunnable"
    OWNER_BOUND = "owner_bound"
    EXTERNALLY_OWNED = "externally_owned"


class ProcessStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"


TERMINAL_STATUSES = (
    ProcessStatus.COMPLETED,
    ProcessStatus.FAILED,
    ProcessStatus.CANCELLED,
    ProcessStatus.ABANDONED,
)


class WaitKind(models.TextChoices):
    NONE = "", "runnable"
    TIMER = "timer"
    SIGNAL = "signal"
    CHILD = "child"
    EXTERNAL = "external"  # an externally owned process, until its owner completes it


class Process(models.Model):
    """One durable process. Non-terminal rows are the work queue."""

    id = models.CharField(primary_key=True, max_length=64)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="processes")
    kind = models.CharField(max_length=20, choices=ProcessKind.choices, default=ProcessKind.DEFINITION)
    definition_name = models.CharField(max_length=200, blank=True, default="")
    definition_version = models.PositiveIntegerField(default=1)
    input = models.JSONField(default=dict, blank=True)
    disposition = models.CharField(max_length=20, choices=Disposition.choices)
    registration_hash = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=20, choices=ProcessStatus.choices, default=ProcessStatus.RUNNING)
    wait_kind = models.CharField(max_length=10, choices=WaitKind.choices, blank=True, default="")
    wait_until = models.DateTimeField(
        null=True, blank=True, help_text="Timer due time, a signal wait's timeout, or an external process's deadline."
    )
    wait_signal = models.CharField(max_length=100, blank=True, default="")
    wait_child = models.CharField(max_length=64, blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    provenance = models.JSONField(default=dict, blank=True, help_text='{"session", "turn"} or {"host"}.')
    wake_session_id = models.CharField(max_length=64, blank=True, default="")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    first_started_at = models.DateTimeField(null=True, blank=True)
    first_started_by = models.CharField(max_length=200, blank=True, default="")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_cascade = models.BooleanField(default=False)
    abandon_requested_at = models.DateTimeField(null=True, blank=True)
    runnable_since = models.DateTimeField(help_text="When it last became runnable (for the re-dispatch sweep).")
    run_count = models.PositiveIntegerField(default=0)
    event_seq = models.PositiveIntegerField(default=0, help_text="Last per-process event sequence number.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "processes"
        indexes = [
            models.Index(fields=["status", "wait_kind", "wait_until"], name="process_work_idx"),
            models.Index(fields=["workspace", "status", "created_at"], name="process_ws_status_idx"),
            models.Index(fields=["kind"], name="process_kind_idx"),
            models.Index(fields=["definition_name"], name="process_definition_idx"),
            models.Index(fields=["disposition"], name="process_disposition_idx"),
            models.Index(fields=["status", "finished_at"], name="process_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.definition_name or self.kind}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def journal_scope(self) -> str:
        return f"process:{self.id}"


class ProcessEvent(models.Model):
    """The per-process append-only log: started, step.completed, waiting, resumed,
    signal.<name>, cancel_requested, emitted events and the terminal event."""

    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=120)
    data = models.JSONField(default=dict, blank=True)
    ts = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["process", "seq"]
        constraints = [models.UniqueConstraint(fields=["process", "seq"], name="process_event_seq_unique")]
        indexes = [models.Index(fields=["process", "type", "seq"], name="process_event_type_idx")]

    def __str__(self) -> str:
        return f"{self.process_id}#{self.seq} {self.type}"


class ProcessGrant(models.Model):
    """Which sessions may see and control a process (additive, revocable)."""

    process = models.ForeignKey(Process, on_delete=models.CASCADE, related_name="grants")
    session_id = models.CharField(max_length=64)
    granted_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["process", "session_id"], name="process_grant_unique")]
        indexes = [models.Index(fields=["session_id", "revoked_at"], name="process_grant_session_idx")]

    def __str__(self) -> str:
        return f"{self.session_id} -> {self.process_id}"


# --- triggers -----------------------------------------------------------------------------


class TriggerEvent(models.Model):
    """A declared trigger event type, with an optional JSON schema for its payload."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="trigger_events")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    payload_schema = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="trigger_event_unique")]

    def __str__(self) -> str:
        return self.name


class TriggerSubscription(models.Model):
    """Start ``definition_name`` with ``input_template`` for each occurrence of ``event``.
    ``"$payload"``/``"$payload.<path>"``/``"$occurrence_id"`` strings in the template are replaced."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="trigger_subscriptions")
    event = models.ForeignKey(TriggerEvent, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=100, blank=True, default="")
    definition_name = models.CharField(max_length=200)
    input_template = models.JSONField(default=dict, blank=True)
    disposition = models.CharField(max_length=20, choices=Disposition.choices, default=Disposition.RERUNNABLE)
    wake_session_id = models.CharField(max_length=64, blank=True, default="")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["event", "enabled"], name="trigger_sub_event_idx")]

    def __str__(self) -> str:
        return self.name or f"{self.event} -> {self.definition_name}"


class TriggerOccurrence(models.Model):
    """One occurrence of a trigger event, idempotent by ``occurrence_id`` in the workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="trigger_occurrences")
    event = models.ForeignKey(TriggerEvent, on_delete=models.CASCADE, related_name="occurrences")
    occurrence_id = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=100, blank=True, default="api")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "occurrence_id"], name="trigger_occurrence_unique")]

    def __str__(self) -> str:
        return self.occurrence_id


class TriggerDelivery(models.Model):
    """Exactly one process per (occurrence, subscription)."""

    occurrence = models.ForeignKey(TriggerOccurrence, on_delete=models.CASCADE, related_name="deliveries")
    subscription = models.ForeignKey(TriggerSubscription, on_delete=models.CASCADE, related_name="deliveries")
    process_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "trigger deliveries"
        constraints = [models.UniqueConstraint(fields=["occurrence", "subscription"], name="trigger_delivery_unique")]

    def __str__(self) -> str:
        return f"{self.occurrence} -> {self.process_id}"


class CronSchedule(models.Model):
    """A trigger source: emits an occurrence of ``event`` at every cron tick (UTC)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="cron_schedules")
    name = models.CharField(max_length=100)
    event = models.ForeignKey(TriggerEvent, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(max_length=100, help_text="Five fields, UTC: minute hour day-of-month month day-of-week.")
    payload = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workspace", "name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="cron_schedule_unique")]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="cron_due_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron})"
