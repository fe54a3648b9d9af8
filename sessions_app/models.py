"""Agent sessions: the conversation graph, turns, queued input, commands, usage, prices, attachments.

The effect journal and the session execution lease live in lashops.core (Effect, Lease),
shared with processes; a turn's effects are scoped ``turn:<session>:<turn>``.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from lashops.core.models import Workspace

session_id_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
    "Use 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.",
)


class TokenCounts(models.Model):
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_input_tokens = models.BigIntegerField(default=0)
    cache_write_input_tokens = models.BigIntegerField(default=0)
    reasoning_output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)

    class Meta:
        abstract = True


class Session(TokenCounts):
    class Mode(models.TextChoices):
        STANDARD = "standard", "standard"
        # A second execution mode (lash's `rlm`) gets its own value here and a protocol in runtime/.

    class Status(models.TextChoices):
        OPEN = "open", "open"
        PARKED = "parked", "parked"
        CLOSED = "closed", "closed"

    id = models.CharField(primary_key=True, max_length=64, validators=[session_id_validator])
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sessions")
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.STANDARD)
    model = models.JSONField(help_text='{"provider", "model", "parameters"}')
    system_prompt = models.TextField(blank=True, default="")
    prompt_layers = models.JSONField(default=list, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    depth = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    head_revision = models.BigIntegerField(default=0)
    leaf_node_id = models.CharField(max_length=120, blank=True, default="")
    active_turn_id = models.CharField(max_length=64, blank=True, default="", help_text="The turn holding the lane.")
    plugin_state = models.JSONField(default=dict, blank=True)
    tool_catalog_generation = models.IntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    # Child usage rolled up into this session (subagents), on top of its own token counts.
    child_input_tokens = models.BigIntegerField(default=0)
    child_output_tokens = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="session_ws_created_idx")]

    def __str__(self) -> str:
        return self.id


class Turn(TokenCounts):
    """One turn of a session. Its commit stamp (``commit_digest``, written with ``committed`` in the
    commit transaction) is the truth about whether it committed: no write ever moves a stamped
    turn back to ``queued`` or ``running`` (sessions_app.services guards every status change)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        COMMITTED = "committed", "committed"

    class Outcome(models.TextChoices):
        FINISHED = "finished", "finished"
        STOPPED = "stopped", "stopped"

    id = models.CharField(primary_key=True, max_length=64)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    source_key = models.CharField(max_length=200, blank=True, default="")
    input_text = models.TextField()
    background = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True, default="")
    stop_reason = models.CharField(max_length=40, blank=True, default="")
    stop_detail = models.TextField(blank=True, default="")
    final_text = models.TextField(blank=True, default="")
    steps = models.PositiveIntegerField(default=0)
    commit_digest = models.CharField(max_length=64, blank=True, default="")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    child_input_tokens = models.BigIntegerField(default=0)
    child_output_tokens = models.BigIntegerField(default=0)
    drive_attempts = models.PositiveIntegerField(default=0)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When the turn sweep last sent this turn's drive (re-dispatch dedupe)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="turn_index_unique"),
            models.UniqueConstraint(
                fields=["session", "source_key"], condition=~models.Q(source_key=""), name="turn_source_key_unique"
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="turn_status_idx")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.index}"

    @property
    def scope(self) -> str:
        return f"turn:{self.session_id}:{self.id}"


class Node(models.Model):
    """One node of the conversation graph (user, assistant, tool_call, tool_result, system, plugin)."""

    class Kind(models.TextChoices):
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"
        TOOL_CALL = "tool_call", "tool call"
        TOOL_RESULT = "tool_result", "tool result"
        SYSTEM = "system", "system"
        PLUGIN = "plugin", "plugin"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="nodes")
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="nodes")
    node_id = models.CharField(max_length=120)
    seq = models.BigIntegerField(help_text="Order within the session.")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    parent_id = models.CharField(max_length=120, blank=True, default="")
    caused_by = models.CharField(max_length=120, blank=True, default="")
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "node_id"], name="node_id_unique")]
        indexes = [models.Index(fields=["session", "seq"], name="node_session_seq_idx")]

    def __str__(self) -> str:
        return f"{self.node_id} ({self.kind})"

    def as_runtime_dict(self) -> dict:
        return {
            "id": self.node_id,
            "kind": self.kind,
            "parent_id": self.parent_id or None,
            "caused_by": self.caused_by or None,
            "payload": self.payload,
        }


class PendingInput(models.Model):
    """User input posted while a turn runs: taken at the running turn's next step boundary, or
    deferred to the next turn, exactly once. Idempotent by ``source_key``."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        CLAIMED = "claimed", "claimed by a running turn"
        ACCEPTED = "accepted", "accepted"
        CANCELLED = "cancelled", "cancelled"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="pending_inputs")
    source_key = models.CharField(max_length=200)
    text = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    accepted_by = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["session", "id"]
        constraints = [models.UniqueConstraint(fields=["session", "source_key"], name="pending_input_key_unique")]
        indexes = [models.Index(fields=["session", "status", "id"], name="pending_input_status_idx")]

    def __str__(self) -> str:
        return f"{self.session_id}:{self.source_key} ({self.status})"


class SessionCommand(models.Model):
    """A non-user mutation (refresh_tool_catalog, reset_session), idempotent by source key.
    Commands drain before queued turns and never become prompt text."""

    class Kind(models.TextChoices):
        REFRESH_TOOL_CATALOG = "refresh_tool_catalog", "refresh tool catalog"
        RESET_SESSION = "reset_session", "reset session"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        APPLIED = "applied", "applied"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="commands")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    source_key = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "id"]
        constraints = [models.UniqueConstraint(fields=["session", "source_key"], name="session_command_key_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.source_key}"


class UsageRecord(TokenCounts):
    """One model call's usage (source ``turn``), or a child session's usage (source ``child``)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="usage_records")
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="usage_records")
    source = models.CharField(max_length=20, default="turn")
    provider = models.CharField(max_length=40, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    step = models.IntegerField(default=0)
    attempt = models.IntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["model", "created_at"], name="usage_model_idx"),
            # The fleet page's burn charts read a time range (1h, 24h, 7d) of every model.
            models.Index(fields=["created_at"], name="usage_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.turn_id} {self.model} {self.source}"


class ModelPrice(models.Model):
    """USD per million tokens, by provider and model (admin-editable)."""

    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=200)
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    cache_read_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    cache_write_per_mtok = models.DecimalField(max_digits=12, decimal_places=4, default=0)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="model_price_unique")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


class Attachment(models.Model):
    """A content-addressed blob in the configured storage."""

    sha256 = models.CharField(primary_key=True, max_length=64)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=200, default="application/octet-stream")
    storage_name = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256[:12]


class SessionAttachment(models.Model):
    """A session holds a blob; only a holder may read it."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="attachments")
    attachment = models.ForeignKey(Attachment, on_delete=models.PROTECT, related_name="holders")
    filename = models.CharField(max_length=255, blank=True, default="")
    node_id = models.CharField(max_length=120, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "attachment"], name="session_attachment_unique")]

    def __str__(self) -> str:
        return f"{self.session_id}:{self.attachment_id[:12]}"
