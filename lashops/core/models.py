"""Platform tables shared by every app: workspaces, API keys, the durable event stream,
leases with fencing tokens and the effect journal."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

slug_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
    "Use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit.",
)


class Workspace(models.Model):
    """The tenant boundary: every object belongs to exactly one workspace."""

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="lashops_workspaces")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """A workspace API key. Only a SHA-256 of the secret is stored; the plaintext is shown once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the key, used to look it up.")
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class StreamHead(models.Model):
    """Per-workspace cursor allocator. Allocating a cursor updates this row inside the
    transaction that writes the events, so on PostgreSQL the row lock orders commits by
    cursor: a reader never sees cursor N+1 committed before N."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True, related_name="stream")
    last_cursor = models.BigIntegerField(default=0)
    pruned_through = models.BigIntegerField(default=0, help_text="Events at or below this cursor were pruned.")

    def __str__(self) -> str:
        return f"{self.workspace_id}@{self.last_cursor}"


class Event(models.Model):
    """A durable event: written in the same transaction as the change it describes."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="events")
    cursor = models.BigIntegerField()
    type = models.CharField(max_length=100)
    ts = models.DateTimeField()
    subject = models.JSONField(default=dict)
    data = models.JSONField(default=dict)
    # Indexed copies of the subject ids the streams filter on.
    session_id = models.CharField(max_length=64, blank=True, default="")
    process_id = models.CharField(max_length=64, blank=True, default="")
    mob_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["workspace", "cursor"]
        constraints = [models.UniqueConstraint(fields=["workspace", "cursor"], name="event_cursor_unique")]
        indexes = [
            models.Index(fields=["workspace", "session_id", "cursor"], name="event_session_idx"),
            models.Index(fields=["workspace", "process_id", "cursor"], name="event_process_idx"),
            models.Index(fields=["workspace", "mob_id", "cursor"], name="event_mob_idx"),
            models.Index(fields=["ts"], name="event_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.cursor} {self.type}"


class Lease(models.Model):
    """One writer per (scope, key): holder, monotonic fencing token, expiry.

    Claimed by conditional UPDATE (works on SQLite and PostgreSQL). The row is never
    deleted on release, so the token keeps growing and a revenant holder stays fenced out.
    """

    scope = models.CharField(max_length=32)
    key = models.CharField(max_length=200)
    holder = models.CharField(max_length=200, blank=True, default="")
    token = models.BigIntegerField(default=0)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="lease_scope_key_unique")]
        indexes = [models.Index(fields=["scope", "expires_at"], name="lease_expiry_idx")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key} held by {self.holder or '-'} (token {self.token})"


class Effect(models.Model):
    """The effect journal: one recorded outcome per deterministic replay key.
    A recorded outcome is returned on replay, never re-run."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="effects")
    scope = models.CharField(max_length=200, help_text="Execution scope, e.g. turn:<session>:<turn> or process:<id>.")
    replay_key = models.CharField(max_length=400, unique=True)
    kind = models.CharField(max_length=40)
    outcome = models.JSONField(default=dict)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["scope", "id"], name="effect_scope_idx")]

    def __str__(self) -> str:
        return self.replay_key


class WorkerHeartbeat(models.Model):
    """One row per runner process (a Celery pool process or an ASGI server's in-process driver),
    written every ``LASHOPS_WORKER_BEAT_SECONDS``. A row whose last beat is older than
    ``LASHOPS_WORKER_STALE_SECONDS`` is stale: the leases its holder prefix still holds are at risk
    until they expire and the sweeper reclaims the work. The worker sweep marks such a row once
    (``stale_reported_at``) and publishes ``worker.stale``; its next beat clears the mark. A clean
    exit sets ``stopped_at``; a process found gone from its host without one gets ``died_at``."""

    class Kind(models.TextChoices):
        CELERY = "celery", "Celery worker"
        IN_PROCESS = "in_process", "in-process driver"

    worker_id = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    holder_prefix = models.CharField(max_length=220, help_text="Lease holders from this process start with this.")
    queues = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    last_beat_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    in_flight_count = models.PositiveIntegerField(default=0)
    in_flight = models.JSONField(default=list, blank=True, help_text="Up to 50 items of work running now.")
    completed = models.BigIntegerField(default=0, help_text="Work items finished since start.")
    stale_reported_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the worker sweep published worker.stale; cleared (worker.recovered) by its next beat.",
    )
    died_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the worker sweep found its process gone from its host without a clean stop (worker.dead).",
    )

    class Meta:
        ordering = ["host", "pid"]
        indexes = [models.Index(fields=["last_beat_at"], name="worker_last_beat_idx")]

    def __str__(self) -> str:
        return self.worker_id


class WsTicket(models.Model):
    """A short-lived, single-use ticket for one WebSocket handshake (``?ticket=``), so that no
    API key travels in a URL (URLs end up in access logs). Bound to the workspace and to the
    key or user that asked for it; only a SHA-256 of the ticket is stored. Spent by one
    conditional UPDATE, so of two handshakes racing with it, in any processes, one wins."""

    digest = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="ws_tickets")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="ws_tickets")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="lashops_ws_tickets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "WebSocket ticket"

    def __str__(self) -> str:
        return f"ticket {self.pk} of {self.workspace_id}"
