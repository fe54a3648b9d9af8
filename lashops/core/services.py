"""Writes for the platform tables: workspaces, API keys, leases and the effect journal."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from lashops.core import event_types, tenancy, txn
from lashops.core.errors import Conflict, InvalidInput, LeaseHeld, LeaseLost, NotFound
from lashops.core.models import ApiKey, Effect, Lease, StreamHead, WorkerHeartbeat, Workspace, slug_validator

KEY_PREFIX = "lsk"


# --- workspaces -------------------------------------------------------------------------


def workspace_create(*, slug: str, name: str = "") -> Workspace:
    """Create a workspace and its event stream head."""
    try:
        slug_validator(slug)
    except Exception as exc:
        raise InvalidInput(f"invalid workspace slug {slug!r}: {exc}") from None
    with transaction.atomic():
        if Workspace.objects.filter(slug=slug).exists():
            raise Conflict(f"workspace {slug!r} already exists", code="workspace_exists")
        workspace = Workspace.objects.create(slug=slug, name=name or slug)
        StreamHead.objects.create(workspace=workspace)
    return workspace


def workspace_get_or_create(*, slug: str, name: str = "") -> Workspace:
    try:
        return Workspace.objects.get(slug=slug)
    except Workspace.DoesNotExist:
        return workspace_create(slug=slug, name=name)


# --- API keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown once, never stored


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, workspace: Workspace, name: str) -> IssuedKey:
    """Issue a key. The plaintext ``lsk_<prefix>_<secret>`` is returned once; only a hash is kept."""
    if not name.strip():
        raise InvalidInput("an API key needs a name")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        workspace=workspace, name=name.strip(), prefix=prefix, secret_hash=_hash_secret(secret)
    )
    return IssuedKey(api_key=api_key, plaintext=f"{KEY_PREFIX}_{prefix}_{secret}")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, plaintext: str) -> ApiKey | None:
    """Return the active key matching ``plaintext`` (touching its last-used time), or None."""
    parts = plaintext.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    _, prefix, secret = parts
    api_key = ApiKey.objects.select_related("workspace").filter(prefix=prefix, revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, _hash_secret(secret)):
        return None
    now = timezone.now()
    touch_every = timedelta(seconds=settings.LASHOPS_API_KEY_TOUCH_SECONDS)
    if api_key.last_used_at is None or now - api_key.last_used_at >= touch_every:
        # Throttled so a busy key does not write on every request.
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# --- leases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseGrant:
    scope: str
    key: str
    holder: str
    token: int
    expires_at: Any


def lease_acquire(*, scope: str, key: str, holder: str, ttl: float) -> LeaseGrant:
    """Take the lease if it is free, expired or already ours; the fencing token grows by one
    on every acquisition (a new lease starts at 1). Raises ``LeaseHeld`` with the current
    holder otherwise.

    One statement (SQLite and PostgreSQL): an insert that, when the row exists, becomes the
    conditional UPDATE and returns the new token. It never raises on the unique key, so it
    needs no savepoint inside a caller's transaction, and concurrent first claims cannot race."""
    if not holder:
        raise InvalidInput("a lease holder id is required")
    now = timezone.now()
    expires = now + timedelta(seconds=ttl)
    q = connection.ops.quote_name
    table = q(Lease._meta.db_table)
    moment = Lease._meta.get_field("expires_at")
    at, until = (moment.get_db_prep_value(value, connection) for value in (now, expires))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({q('scope')}, {q('key')}, {q('holder')}, {q('token')}, {q('acquired_at')}, "
            f"{q('expires_at')}) VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT ({q('scope')}, {q('key')}) DO UPDATE SET "
            f"{q('holder')} = excluded.{q('holder')}, {q('token')} = {table}.{q('token')} + 1, "
            f"{q('acquired_at')} = excluded.{q('acquired_at')}, {q('expires_at')} = excluded.{q('expires_at')} "
            f"WHERE {table}.{q('holder')} = '' OR {table}.{q('expires_at')} < %s OR {table}.{q('holder')} = %s "
            f"RETURNING {q('token')}",
            [scope, key, holder, at, until, at, holder],
        )
        row = cursor.fetchone()
    if row is not None:
        return LeaseGrant(scope=scope, key=key, holder=holder, token=int(row[0]), expires_at=expires)
    current = Lease.objects.filter(scope=scope, key=key).first()
    raise LeaseHeld(
        f"{scope} lease for {key!r} is held by {current.holder if current else ''!r}",
        holder=current.holder if current else "",
        token=current.token if current else 0,
    )


def lease_acquire_many(*, scope: str, keys: list[str], holder: str, ttl: float) -> dict[str, LeaseGrant]:
    """``lease_acquire`` for a batch: take every free, expired or already ours lease among
    ``keys`` (the token grows by one), create the missing ones (token 1), and read back which
    ones ``holder`` now has (on PostgreSQL the first two return it: one or two statements).
    Keys held by someone else are left out. Run it inside a transaction: on PostgreSQL the
    rows taken stay locked until it commits."""
    if not holder:
        raise InvalidInput("a lease holder id is required")
    if not keys:
        return {}
    now = timezone.now()
    expires = now + timedelta(seconds=ttl)
    if connection.vendor == "postgresql":
        return _lease_acquire_many_returning(scope, list(dict.fromkeys(keys)), holder, now, expires)
    claimable = Q(holder="") | Q(expires_at__lt=now) | Q(holder=holder)
    Lease.objects.filter(scope=scope, key__in=keys).filter(claimable).update(
        holder=holder, token=F("token") + 1, acquired_at=now, expires_at=expires
    )
    Lease.objects.bulk_create(
        [Lease(scope=scope, key=key, holder=holder, token=1, acquired_at=now, expires_at=expires) for key in keys],
        ignore_conflicts=True,
    )
    rows = Lease.objects.filter(scope=scope, key__in=keys, holder=holder, acquired_at=now).values_list("key", "token")
    return {
        key: LeaseGrant(scope=scope, key=key, holder=holder, token=token, expires_at=expires) for key, token in rows
    }


def _lease_acquire_many_returning(
    scope: str, keys: list[str], holder: str, now: Any, expires: Any
) -> dict[str, LeaseGrant]:
    """``lease_acquire_many`` on PostgreSQL: the UPDATE and the INSERT return what they took, so
    there is no read-back, and the INSERT runs only for keys that have no lease row yet."""
    table = connection.ops.quote_name(Lease._meta.db_table)
    marks = ", ".join(["%s"] * len(keys))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET holder = %s, token = token + 1, acquired_at = %s, expires_at = %s "
            f"WHERE scope = %s AND key IN ({marks}) AND (holder = '' OR expires_at < %s OR holder = %s) "
            "RETURNING key, token",
            [holder, now, expires, scope, *keys, now, holder],
        )
        taken = dict(cursor.fetchall())
        missing = [key for key in keys if key not in taken]
        if missing:
            rows = ", ".join(["(%s, %s, %s, 1, %s, %s)"] * len(missing))
            cursor.execute(
                f"INSERT INTO {table} (scope, key, holder, token, acquired_at, expires_at) VALUES {rows} "
                "ON CONFLICT (scope, key) DO NOTHING RETURNING key, token",
                [value for key in missing for value in (scope, key, holder, now, expires)],
            )
            taken.update(cursor.fetchall())
    return {
        key: LeaseGrant(scope=scope, key=key, holder=holder, token=token, expires_at=expires)
        for key, token in taken.items()
    }


def lease_renew(*, scope: str, key: str, token: int, ttl: float) -> LeaseGrant:
    """Extend a lease we still hold (same token). Raises ``LeaseLost`` otherwise."""
    now = timezone.now()
    expires = now + timedelta(seconds=ttl)
    updated = (
        Lease.objects.filter(scope=scope, key=key, token=token, expires_at__gte=now)
        .exclude(holder="")
        .update(expires_at=expires)
    )
    if not updated:
        raise LeaseLost(f"{scope} lease for {key!r} (token {token}) is no longer held")
    holder = Lease.objects.filter(scope=scope, key=key).values_list("holder", flat=True).get()
    return LeaseGrant(scope=scope, key=key, holder=holder, token=token, expires_at=expires)


def lease_release(*, scope: str, key: str, token: int, check: bool = False) -> bool:
    """Release if the token is still current. Returns whether anything was released.

    With ``check`` the release is also ``lease_check``: it raises ``LeaseLost`` unless ``token``
    is the current, unexpired token, in one statement. Inside a transaction the row then stays
    locked until commit, and a rollback (the lease was lost, or a later failure) undoes the release."""
    now = timezone.now()
    qs = Lease.objects.filter(scope=scope, key=key, token=token)
    if check:
        qs = qs.filter(expires_at__gte=now).exclude(holder="")
    released = bool(qs.update(holder="", expires_at=now))
    if check and not released:
        raise LeaseLost(f"{scope} lease for {key!r} (token {token}) is no longer held")
    return released


def lease_check(*, scope: str, key: str, token: int, lock: bool = False) -> None:
    """Raise ``LeaseLost`` unless ``token`` is the current, unexpired token. With ``lock`` (inside
    a transaction) the lease row is locked on PostgreSQL so it cannot change before commit."""
    qs = Lease.objects.filter(scope=scope, key=key, token=token, expires_at__gte=timezone.now()).exclude(holder="")
    if lock:
        qs = qs.select_for_update()
    if not qs.exists():
        raise LeaseLost(f"{scope} lease for {key!r} (token {token}) is no longer held")


def lease_revoke(*, scope: str, key: str) -> None:
    """Operator action: drop the holder and bump the token so the old holder is fenced out."""
    if not Lease.objects.filter(scope=scope, key=key).update(
        holder="", token=F("token") + 1, expires_at=timezone.now()
    ):
        raise NotFound(f"no {scope} lease for {key!r}")


def lease_fence(*, scope: str, key: str, holder: str) -> bool:
    """Fence ``holder`` out of a lease it still holds (its process is gone): the holder is dropped
    and the token bumped, so the work can be taken over at once instead of after the TTL. A lease
    that changed hands meanwhile is left alone. Returns whether it was fenced."""
    return bool(
        Lease.objects.filter(scope=scope, key=key, holder=holder).update(
            holder="", token=F("token") + 1, expires_at=timezone.now()
        )
    )


# --- effect journal ---------------------------------------------------------------------


def effect_lookup(*, replay_key: str) -> dict[str, Any] | None:
    row = Effect.objects.filter(replay_key=replay_key).values_list("outcome", flat=True).first()
    return row


def effect_record(*, workspace: Workspace | int, scope: str, replay_key: str, kind: str, outcome: dict) -> dict:
    """Record an effect's outcome; the first writer wins and later writers get its outcome back."""
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    row = Effect(workspace_id=workspace_id, scope=scope, replay_key=replay_key, kind=kind, outcome=outcome)
    try:
        if txn.in_transaction():
            with transaction.atomic():  # a savepoint: a lost race must not break the caller's transaction
                row.save(force_insert=True)
        else:
            # Autocommit: the one INSERT is its own transaction, durable when it returns,
            # without a BEGIN and a COMMIT round trip around it.
            row.save(force_insert=True)
        return outcome
    except IntegrityError:
        return Effect.objects.filter(replay_key=replay_key).values_list("outcome", flat=True).get()


# --- event retention --------------------------------------------------------------------


def events_prune(*, older_than_days: int | None = None, batch_size: int | None = None) -> int:
    """Delete durable events older than the retention window, in batches, and advance each
    workspace's ``pruned_through`` so a client holding a pruned cursor is told of the gap.
    Returns the number of rows deleted."""
    from django.db.models import Max

    from lashops.core.models import Event

    days = older_than_days if older_than_days is not None else settings.LASHOPS_EVENT_RETENTION_DAYS
    size = batch_size or settings.LASHOPS_EVENT_PRUNE_BATCH
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(Event.objects.filter(ts__lt=cutoff).order_by("id").values_list("id", flat=True)[:size])
            if not batch:
                return deleted
            marks = Event.objects.filter(id__in=batch).values("workspace_id").annotate(top=Max("cursor"))
            for mark in marks:
                StreamHead.objects.filter(workspace_id=mark["workspace_id"], pruned_through__lt=mark["top"]).update(
                    pruned_through=mark["top"]
                )
            deleted += Event.objects.filter(id__in=batch).delete()[0]


# --- worker heartbeats ------------------------------------------------------------------


def worker_beat(
    *,
    worker_id: str,
    kind: str,
    host: str,
    pid: int,
    holder_prefix: str,
    queues: list[str],
    started_at: Any,
    in_flight: list[dict[str, Any]],
    completed: int,
) -> WorkerHeartbeat:
    """Record that a runner process is alive and what it is running (upsert over ``worker_id``).
    A worker the sweep reported stale is back: the beat clears the mark and publishes
    ``worker.recovered`` in the same transaction (once: the clearing UPDATE is conditional)."""

    now = timezone.now()
    with transaction.atomic():
        # Lock the row before reading the mark: against a sweep marking it, one waits for the other
        # (row lock on PostgreSQL, IMMEDIATE transactions on SQLite), so either the sweep sees this
        # fresh beat and marks nothing, or this beat sees the committed mark and reports the recovery.
        stale_since = (
            WorkerHeartbeat.objects.select_for_update()
            .filter(worker_id=worker_id)
            .values_list("stale_reported_at", flat=True)
            .first()
        )
        recovered = (
            stale_since is not None
            and WorkerHeartbeat.objects.filter(worker_id=worker_id, stale_reported_at=stale_since).update(
                stale_reported_at=None
            )
            == 1
        )
        row, _ = WorkerHeartbeat.objects.update_or_create(
            worker_id=worker_id,
            defaults={
                "kind": kind,
                "host": host,
                "pid": pid,
                "holder_prefix": holder_prefix,
                "queues": queues,
                "started_at": started_at,
                "last_beat_at": now,
                "stopped_at": None,
                "died_at": None,
                "in_flight_count": len(in_flight),
                "in_flight": in_flight[:50],
                "completed": completed,
            },
        )
        if recovered:
            _worker_publish(
                type=event_types.WORKER_RECOVERED,
                row=row,
                data={"stale_reported_at": stale_since.isoformat(), "health": "healthy"},  # type: ignore[union-attr]  # recovered: it was set
            )
    return row


def worker_stop(*, worker_id: str) -> None:
    """A runner shut down cleanly: it is no longer expected to beat."""

    now = timezone.now()
    WorkerHeartbeat.objects.filter(worker_id=worker_id).update(
        stopped_at=now, last_beat_at=now, in_flight_count=0, in_flight=[]
    )


def workers_prune(*, older_than_hours: float | None = None) -> int:
    """Forget workers that have not beaten for ``LASHOPS_WORKER_FORGET_HOURS``."""

    hours = older_than_hours if older_than_hours is not None else settings.LASHOPS_WORKER_FORGET_HOURS
    cutoff = timezone.now() - timedelta(hours=hours)
    return WorkerHeartbeat.objects.filter(last_beat_at__lt=cutoff).delete()[0]


def workers_sweep(*, now: Any = None) -> list[str]:
    """Report workers that stopped beating. First the dead: every row of this host, not stopped and
    not yet marked, whose process is gone (``heartbeat.worker_gone``) gets ``died_at`` and one
    durable ``worker.dead`` event at once, without waiting for it to go stale. Then the stale:
    every other row silent for ``LASHOPS_WORKER_STALE_SECONDS``, not stopped and not yet reported
    gets ``stale_reported_at`` and one durable ``worker.stale`` event. Each event (worker, host,
    pid, last beat; and the work in flight and leases at risk of that workspace only) goes on every
    workspace's fleet stream, in one transaction per worker. Two sweepers racing report each worker
    once: the mark is a conditional UPDATE whose row count decides who publishes. Returns the
    worker ids reported."""

    now = now or timezone.now()
    reported = _workers_mark_dead(now)
    cutoff = now - timedelta(seconds=settings.LASHOPS_WORKER_STALE_SECONDS)
    unreported = Q(
        stopped_at__isnull=True, died_at__isnull=True, stale_reported_at__isnull=True, last_beat_at__lt=cutoff
    )
    for pk in WorkerHeartbeat.objects.filter(unreported).order_by("pk").values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            # On PostgreSQL a row another sweeper is reporting is skipped instead of waited for;
            # the conditional UPDATE is what decides on SQLite, where this lock is a no-op.
            row = WorkerHeartbeat.objects.select_for_update(skip_locked=True).filter(unreported, pk=pk).first()
            if row is None or not WorkerHeartbeat.objects.filter(unreported, pk=pk).update(stale_reported_at=now):
                continue
            row.stale_reported_at = now
            _worker_publish(
                type=event_types.WORKER_STALE,
                row=row,
                data={
                    "health": "stale",
                    "stale_reported_at": now.isoformat(),
                    "seconds_since_beat": round((now - row.last_beat_at).total_seconds(), 1),
                    "stale_after_seconds": settings.LASHOPS_WORKER_STALE_SECONDS,
                },
                scoped=_stale_work(row, now=now),
            )
        reported.append(row.worker_id)
    return reported


def _workers_mark_dead(now: Any) -> list[str]:
    from lashops.core.heartbeat import HOST, worker_gone

    candidates = Q(host=HOST, stopped_at__isnull=True, died_at__isnull=True)
    reported = []
    for row in WorkerHeartbeat.objects.filter(candidates).order_by("pk")[:500]:
        if not worker_gone(host=row.host, pid=row.pid, started_at=row.started_at):
            continue
        with transaction.atomic():
            if not WorkerHeartbeat.objects.filter(candidates, pk=row.pk, last_beat_at=row.last_beat_at).update(
                died_at=now
            ):
                continue  # another sweeper marked it, or it beat meanwhile (it is not gone)
            row.died_at = now
            _worker_publish(
                type=event_types.WORKER_DEAD,
                row=row,
                data={
                    "health": "dead",
                    "died_at": now.isoformat(),
                    "seconds_since_beat": round((now - row.last_beat_at).total_seconds(), 1),
                },
                scoped=_stale_work(row, now=now),
            )
        reported.append(row.worker_id)
    return reported


def _stale_work(row: WorkerHeartbeat, *, now: Any) -> Callable[[int], dict[str, Any]]:
    """Per workspace, what a stale worker was running and the leases it still holds: a workspace
    is told about its own items only (other workspaces' ids are theirs). The items are mapped to
    workspaces once per worker, one query per lease scope and per id kind."""
    leases = list(
        Lease.objects.exclude(holder="")
        .filter(holder__startswith=row.holder_prefix, expires_at__gte=now)
        .order_by("scope", "key")
        .values("scope", "key", "holder", "expires_at")[:2000]
    )
    lease_owners = tenancy.lease_workspaces(leases)
    work_owners = tenancy.work_workspaces(row.in_flight)

    def of(workspace_id: int) -> dict[str, Any]:
        in_flight = [item for item, owner in zip(row.in_flight, work_owners, strict=True) if owner == workspace_id]
        at_risk = [
            {
                "scope": lease["scope"],
                "key": lease["key"],
                "holder": lease["holder"],
                "expires_at": lease["expires_at"].isoformat(),  # type: ignore[union-attr]  # live leases: filtered on it
            }
            for lease, owner in zip(leases, lease_owners, strict=True)
            if owner == workspace_id
        ]
        return {"in_flight_count": len(in_flight), "in_flight": in_flight, "at_risk": at_risk[:200]}

    return of


def _worker_publish(
    *,
    type: str,
    row: WorkerHeartbeat,
    data: dict[str, Any],
    scoped: Callable[[int], dict[str, Any]] | None = None,
) -> None:
    """A worker is shared by every workspace (each fleet page lists it), so a worker transition is
    one durable event on each workspace's stream, written in the caller's transaction. ``scoped``
    adds what is that workspace's own (work in flight, leases at risk) to its copy."""
    from lashops.core.events import publish

    payload = {
        "worker_id": row.worker_id,
        "kind": row.kind,
        "host": row.host,
        "pid": row.pid,
        "last_beat_at": row.last_beat_at.isoformat(),
        **data,
    }
    for workspace in Workspace.objects.order_by("pk"):  # pk order: stream heads locked in one order
        own = scoped(workspace.pk) if scoped is not None else {}
        publish(workspace=workspace, type=type, subject={"worker": row.worker_id}, data=payload | own)


# --- WebSocket tickets ------------------------------------------------------------------

TICKET_PREFIX = "wst"


@dataclass(frozen=True)
class IssuedTicket:
    ticket: Any  # WsTicket
    plaintext: str  # shown once, never stored
    expires_in: float  # seconds


def ws_ticket_issue(*, workspace: Workspace, api_key: ApiKey | None = None, user: Any = None) -> IssuedTicket:
    """Issue a single-use ticket for one WebSocket handshake (``?ticket=`` on any ``/ws/``
    path), valid ``LASHOPS_WS_TICKET_SECONDS``, bound to ``workspace`` and to the key or user
    that asked. Only its hash is stored. Tickets expired for a while are removed here."""
    from lashops.core.models import WsTicket

    now = timezone.now()
    ttl = timedelta(seconds=settings.LASHOPS_WS_TICKET_SECONDS)
    secret = secrets.token_urlsafe(24)
    with transaction.atomic():
        WsTicket.objects.filter(expires_at__lt=now - ttl).delete()
        ticket = WsTicket.objects.create(
            digest=_hash_secret(secret), workspace=workspace, api_key=api_key, user=user, expires_at=now + ttl
        )
    return IssuedTicket(ticket=ticket, plaintext=f"{TICKET_PREFIX}_{secret}", expires_in=ttl.total_seconds())


def ws_ticket_redeem(*, plaintext: str) -> Any:
    """Spend a ticket and return it (with its workspace). One conditional UPDATE (unused and
    unexpired -> used), so of two handshakes racing with one ticket, in any processes, exactly
    one wins. Raises ``TicketRefused`` (``ticket_invalid``, ``ticket_used``, ``ticket_expired``,
    ``ticket_revoked``) with a message a client can show."""
    from lashops.core.errors import TicketRefused
    from lashops.core.models import WsTicket

    prefix, _, secret = plaintext.strip().partition("_")
    if prefix != TICKET_PREFIX or not secret:
        raise TicketRefused("not a LashOps WebSocket ticket (wst_...): ask POST /api/ws-tickets for one")
    digest = _hash_secret(secret)
    now = timezone.now()
    spent = WsTicket.objects.filter(digest=digest, used_at__isnull=True, expires_at__gt=now).update(used_at=now)
    ticket = WsTicket.objects.select_related("workspace", "api_key", "user").filter(digest=digest).first()
    if ticket is None:
        raise TicketRefused("unknown ticket: ask POST /api/ws-tickets for a new one")
    if not spent:
        if ticket.used_at is not None:
            raise TicketRefused("this ticket was already used: a ticket opens one socket", code="ticket_used")
        raise TicketRefused("this ticket has expired: ask POST /api/ws-tickets for a new one", code="ticket_expired")
    if ticket.api_key is not None and ticket.api_key.revoked_at is not None:
        raise TicketRefused("the API key that asked for this ticket has been revoked", code="ticket_revoked")
    user = ticket.user
    if user is not None and not (
        user.is_active and (user.is_superuser or user.lashops_workspaces.filter(pk=ticket.workspace_id).exists())
    ):
        message = "the user who asked for this ticket no longer belongs to its workspace"
        raise TicketRefused(message, code="ticket_revoked")
    return ticket
