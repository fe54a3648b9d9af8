"""The continuity store: identity -> session binding, generation and checkpoint version.
Every write is compare-and-set on the fencing token (a write with a higher token fences out
older writers) and is checked against the identity lease in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from django.db import transaction
from django.db.models import Q

from lashops.core import event_types
from lashops.core.events import publish
from mobs_app.errors import NotFound, StaleCheckpointVersion, StaleFencingToken
from mobs_app.leases import lease_provider
from mobs_app.models import Continuity, Identity


@dataclass(frozen=True)
class Uninitialized:
    identity: str


@dataclass(frozen=True)
class Ready:
    identity: str
    session_id: str
    generation: int
    checkpoint_version: int
    fencing_token: int


@dataclass(frozen=True)
class Broken:
    identity: str
    reason: str


Resolution = Uninitialized | Ready | Broken


class ContinuityStore(Protocol):
    def resolve_many(self, mob_pk: int, keys: list[str]) -> dict[str, Resolution]: ...


class DatabaseContinuityStore:
    def resolve_many(self, mob_pk: int, keys: list[str]) -> dict[str, Resolution]:
        """One query for every requested identity: Uninitialized, Ready or Broken."""
        out: dict[str, Resolution] = {key: Uninitialized(key) for key in keys}
        rows = Identity.objects.filter(mob_id=mob_pk, key__in=keys).select_related("continuity")
        for ident in rows:
            if ident.state == Identity.State.BROKEN:
                out[ident.key] = Broken(ident.key, ident.broken_reason)
                continue
            record = getattr(ident, "continuity", None)
            if record is not None and record.session_id:
                out[ident.key] = Ready(
                    ident.key, record.session_id, record.generation, record.checkpoint_version, record.fencing_token
                )
        return out


def _guarded(identity: Identity, token: int) -> None:
    """The lease must still be ours and current (row locked on PostgreSQL until commit)."""
    try:
        lease_provider().check(identity.lease_key, token=token, lock=True)
    except Exception as exc:
        raise StaleFencingToken(f"identity {identity.key!r}: fencing token {token} is stale ({exc})") from None


def continuity_bind(
    *, identity: Identity, token: int, session_id: str, generation: int, checkpoint_version: int, runtime_instance: str
) -> Continuity:
    """Bind the identity to a session (create, resume, reset). CAS on the fencing token."""
    with transaction.atomic():
        _guarded(identity, token)
        Continuity.objects.get_or_create(identity=identity)
        updated = Continuity.objects.filter(pk=identity.pk, fencing_token__lte=token).update(
            session_id=session_id,
            generation=generation,
            checkpoint_version=checkpoint_version,
            fencing_token=token,
            runtime_instance=runtime_instance,
        )
        if not updated:
            raise StaleFencingToken(f"identity {identity.key!r}: a newer fencing token has written continuity")
        return Continuity.objects.get(pk=identity.pk)


def continuity_checkpoint(
    *, identity: Identity, token: int, session_id: str, generation: int, version: int
) -> Continuity:
    """Record a checkpoint. ``version`` must exceed the current one within ``generation``; a write
    for a session or generation the identity no longer runs fails ``NotFound`` (abandoned stream)."""
    with transaction.atomic():
        _guarded(identity, token)
        record = Continuity.objects.select_for_update().filter(pk=identity.pk).first()
        if record is None or record.session_id != session_id or record.generation != generation:
            raise NotFound(
                f"identity {identity.key!r} no longer runs session {session_id!r} generation {generation}",
                code="abandoned_session",
            )
        if record.fencing_token > token:
            raise StaleFencingToken(f"identity {identity.key!r}: token {token} is older than {record.fencing_token}")
        updated = Continuity.objects.filter(
            Q(pk=identity.pk),
            Q(fencing_token__lte=token),
            Q(generation=generation),
            Q(session_id=session_id),
            Q(checkpoint_version__lt=version),
        ).update(checkpoint_version=version, fencing_token=token)
        if not updated:
            raise StaleCheckpointVersion(
                f"identity {identity.key!r}: checkpoint version {version} is not above {record.checkpoint_version}",
                details={"current": record.checkpoint_version},
            )
        return Continuity.objects.get(pk=identity.pk)


def continuity_checkpoint_committed(
    *, session_id: str, head_revision: int, record: Continuity | None = None
) -> Continuity | None:
    """A session committed a turn: if an identity runs that session now, record ``head_revision``
    as its checkpoint version. Compare-and-set on the record as read (session, generation, fencing
    token) and strictly increasing, so a reset or rebind in between wins; a session the identity
    no longer runs (an older generation) is ignored. ``record``: the session's continuity record
    (with ``identity__mob__workspace``) if the caller just read it. Returns the updated record, or None."""
    if not session_id:
        return None
    if record is None:
        record = Continuity.objects.filter(session_id=session_id).select_related("identity__mob__workspace").first()
    if record is None:
        return None
    with transaction.atomic():
        updated = Continuity.objects.filter(
            pk=record.pk,
            session_id=session_id,
            generation=record.generation,
            fencing_token=record.fencing_token,
            checkpoint_version__lt=head_revision,
        ).update(checkpoint_version=head_revision)
        if not updated:
            return None
        mob = record.identity.mob
        publish(
            workspace=mob.workspace,
            type=event_types.IDENTITY_CHECKPOINTED,
            subject={"mob": mob.pk, "mob_id": mob.mob_id, "identity": record.identity.key},
            data={"session_id": session_id, "generation": record.generation, "checkpoint_version": head_revision},
        )
    record.checkpoint_version = head_revision
    return record
