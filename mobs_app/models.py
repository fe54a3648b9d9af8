"""Mobs: TOML-defined agent teams. The database is the roster, the continuity store and (through
``lashops.core`` leases with scope ``identity``) the lease provider."""

from __future__ import annotations

from django.db import models

from lashops.core.models import Lease, Workspace


class Mob(models.Model):
    """One mob of a workspace. ``mob_id`` is the TOML ``[mob] id``; stream subjects use the pk."""

    class Bootstrap(models.TextChoices):
        EAGER = "eager", "eager (materialize everyone)"
        LAZY = "lazy", "lazy (register only)"
        LAZY_BACKGROUND_WARM = "lazy_background_warm", "lazy, warmed in the background"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="mobs")
    mob_id = models.CharField(max_length=63)
    active_revision = models.ForeignKey(
        "MobDefinition", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    bootstrap_mode = models.CharField(max_length=24, choices=Bootstrap.choices, default=Bootstrap.LAZY)
    warm_concurrency = models.PositiveSmallIntegerField(default=4)
    bootstrap_error = models.TextField(blank=True, default="")
    warm_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A warm (eager or background) was asked for and is not finished: the warming sweep "
        "re-dispatches it while no live warmer holds the mob's warm lease.",
    )
    max_sessions = models.PositiveIntegerField(default=64)
    session_count = models.PositiveIntegerField(default=0, help_text="Members holding a session (capacity).")
    shutting_down = models.BooleanField(default=False, help_text="Draining: new dispatches are refused.")
    console_seq = models.BigIntegerField(default=0)
    ledger_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "mob_id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "mob_id"], name="mob_workspace_id_unique")]
        indexes = [
            models.Index(
                fields=["warm_requested_at"],
                name="mob_warm_requested_idx",
                condition=models.Q(warm_requested_at__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return self.mob_id

    @property
    def definition(self) -> dict:
        return self.active_revision.data if self.active_revision_id else {}  # type: ignore[union-attr]  # active_revision_id checked


class MobDefinition(models.Model):
    """One revision of a mob's TOML. Each change is a new revision; members record theirs."""

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="revisions")
    revision = models.PositiveIntegerField()
    source = models.TextField(help_text="The TOML as loaded.")
    data = models.JSONField(help_text="The validated, normalised definition.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["mob", "-revision"]
        constraints = [models.UniqueConstraint(fields=["mob", "revision"], name="mobdef_revision_unique")]
        verbose_name = "mob definition"

    def __str__(self) -> str:
        return f"{self.mob_id} r{self.revision}"


class Profile(models.Model):
    """A role template of one definition revision (denormalised for admin and queries)."""

    definition = models.ForeignKey(MobDefinition, on_delete=models.CASCADE, related_name="profiles")
    name = models.CharField(max_length=63)
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True, default="")
    runtime_mode = models.CharField(max_length=20, default="turn_driven")
    peer_description = models.TextField(blank=True, default="")
    tools = models.JSONField(default=dict)
    skills = models.JSONField(default=list)
    external_addressable = models.BooleanField(default=False)

    class Meta:
        ordering = ["definition", "name"]
        constraints = [models.UniqueConstraint(fields=["definition", "name"], name="profile_name_unique")]

    def __str__(self) -> str:
        return self.name


class Identity(models.Model):
    """A roster entry: a stable application key with a profile, and its lifecycle state."""

    class State(models.TextChoices):
        DORMANT = "dormant"
        WARMING = "warming"
        ACTIVE = "active"
        BROKEN = "broken"
        RETIRING = "retiring"
        RETIRED = "retired"

    class Addressability(models.TextChoices):
        ADDRESSABLE = "addressable"
        INTERNAL_ONLY = "internal_only"

    class Source(models.TextChoices):
        DEFINITION = "definition", "[roster] of the definition"
        API = "api", "API or admin"

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="identities")
    key = models.CharField(max_length=150)
    profile = models.CharField(max_length=63)
    addressability = models.CharField(max_length=16, choices=Addressability.choices, default="addressable")
    display_name = models.CharField(max_length=200, blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    initial_message = models.TextField(blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    revision = models.PositiveIntegerField(default=0, help_text="Definition revision the member runs.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.DORMANT)
    broken_reason = models.TextField(blank=True, default="")
    materializations = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["mob", "key"]
        verbose_name_plural = "identities"
        constraints = [models.UniqueConstraint(fields=["mob", "key"], name="identity_mob_key_unique")]
        indexes = [models.Index(fields=["mob", "state"], name="identity_state_idx")]

    def __str__(self) -> str:
        return f"{self.key}@{self.mob_id}"

    @property
    def lease_key(self) -> str:
        return f"{self.mob_id}:{self.key}"


class Continuity(models.Model):
    """Identity -> session binding. Every write is compare-and-set on the fencing token;
    ``checkpoint_version`` strictly increases within a ``generation``."""

    identity = models.OneToOneField(Identity, on_delete=models.CASCADE, primary_key=True, related_name="continuity")
    session_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    generation = models.PositiveIntegerField(default=0)
    checkpoint_version = models.PositiveBigIntegerField(default=0)
    fencing_token = models.BigIntegerField(default=0)
    runtime_instance = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "continuity"

    def __str__(self) -> str:
        return f"{self.identity_id}: {self.session_id or '-'} g{self.generation} v{self.checkpoint_version}"


class IdentityLease(Lease):
    """Admin view of ``lashops.core`` leases with scope ``identity`` (key ``<mob pk>:<identity>``)."""

    class Meta:
        proxy = True
        verbose_name = "identity lease"


class Edge(models.Model):
    """A canonical (a < b) peer edge. ``source`` says who added it; reconcile-edges only ever
    removes edges whose source it manages (wiring, provider), never operator edges."""

    class Source(models.TextChoices):
        WIRING = "wiring"
        OPERATOR = "operator"
        PROVIDER = "provider"

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="edges")
    a = models.CharField(max_length=150)
    b = models.CharField(max_length=150)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.OPERATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["mob", "a", "b"]
        constraints = [
            models.UniqueConstraint(fields=["mob", "a", "b", "source"], name="edge_unique"),
            models.CheckConstraint(condition=models.Q(a__lt=models.F("b")), name="edge_canonical"),
        ]

    def __str__(self) -> str:
        return f"{self.a} <-> {self.b} ({self.source})"


class ConsoleFrame(models.Model):
    """The mob's console log: a deduplicated timeline with cursor ``console:<seq>``."""

    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        DISPATCHING = "dispatching"
        DELIVERED = "delivered"
        DELIVERY_FAILED = "delivery_failed"
        COMPLETED = "completed"
        REDACTED = "redacted"

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="console_frames")
    seq = models.BigIntegerField()
    dedupe_key = models.CharField(max_length=400, null=True, blank=True)
    identity = models.CharField(max_length=150, blank=True, default="")
    session_id = models.CharField(max_length=64, blank=True, default="")
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACCEPTED)
    frame_version = models.PositiveIntegerField(default=1)
    source_kind = models.CharField(max_length=20, default="send")
    payload = models.JSONField(default=dict)
    delivery_attempts = models.PositiveIntegerField(
        default=0, help_text="Delivery attempts started (an operator's retry of a failed frame starts again at 0)."
    )
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the delivery sweep next looks at the frame: a due retry or a lost dispatch (accepted), "
        "the deadline of the attempt in progress (dispatching). Empty once delivered or failed for good.",
    )
    last_error = models.TextField(blank=True, default="", help_text="Why the last delivery attempt failed.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["mob", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["mob", "seq"], name="console_seq_unique"),
            models.UniqueConstraint(fields=["mob", "dedupe_key"], name="console_dedupe_unique"),
        ]
        indexes = [
            # The delivery sweep's range scan; only in-flight deliveries have a time.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(next_attempt_at__isnull=False),
                name="console_next_attempt_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.cursor

    @property
    def cursor(self) -> str:
        return f"console:{self.seq}"


class MobEvent(models.Model):
    """The structural ledger of a mob (member spawned/retired, wired/unwired, materialized,
    broken, lease lost, ...), with a per-mob monotonic ``seq``."""

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="ledger")
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=40)
    identity = models.CharField(max_length=150, blank=True, default="")
    data = models.JSONField(default=dict)
    ts = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["mob", "seq"]
        constraints = [models.UniqueConstraint(fields=["mob", "seq"], name="mobevent_seq_unique")]
        verbose_name = "mob event"

    def __str__(self) -> str:
        return f"{self.mob_id}#{self.seq} {self.kind}"


class MobMetadata(models.Model):
    """Small persistent key/value per mob, e.g. a projector's ``subscription_cursor:<name>``."""

    mob = models.ForeignKey(Mob, on_delete=models.CASCADE, related_name="metadata")
    key = models.CharField(max_length=100)
    value = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mob", "key"], name="mobmeta_key_unique")]
        verbose_name_plural = "mob metadata"

    def __str__(self) -> str:
        return f"{self.mob_id}:{self.key}"


class Contact(models.Model):
    """Contact directory entry: how to reach another mob for ``member::mob`` addresses."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="mob_contacts")
    mob_ref = models.CharField(max_length=63, help_text="The mob id used after '::'.")
    transport = models.CharField(max_length=300, default="inproc", help_text="inproc, tcp://host:port or uds:///path")

    class Meta:
        ordering = ["workspace", "mob_ref"]
        constraints = [models.UniqueConstraint(fields=["workspace", "mob_ref"], name="contact_unique")]

    def __str__(self) -> str:
        return f"{self.mob_ref} -> {self.transport}"
