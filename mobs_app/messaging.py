"""send, dispatch and peer messages. Acceptance is answered at ingress (a console frame,
idempotent by identity, origin and key); the delivery (``mobs_app.delivery``, with retries) and
the turn run in the background."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.db import transaction

from lashops.core.runner import dispatch
from mobs_app.contacts import parse_address, parse_transport
from mobs_app.delivery import delivery_deadline
from mobs_app.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    NotAddressable,
    NotFound,
    ShuttingDown,
    TopologyDenied,
)
from mobs_app.journal import console_append, console_update, ledger_append
from mobs_app.models import ConsoleFrame, Contact, Continuity, Edge, Identity, Mob
from mobs_app.services import identity_get
from mobs_app.topology import topology_check

log = logging.getLogger(__name__)

DISPATCH_ORIGINS = ("connector", "scheduler", "policy", "flow", "system")
ACCEPTING_STATES = (Identity.State.DORMANT, Identity.State.WARMING, Identity.State.ACTIVE)


def _acceptance(frame: ConsoleFrame, *, replayed: bool) -> dict[str, Any]:
    return {
        "accepted": True,
        "identity": frame.identity,
        "origin": frame.payload.get("origin", ""),
        "kind": frame.kind,
        "cursor": frame.cursor,
        "frame_id": frame.pk,
        "replayed": replayed,
    }


def _ingress(
    *, mob: Mob, identity: Identity, kind: str, text: str, origin: str, idempotency_key: str, extra: dict | None = None
) -> dict[str, Any]:
    if not text:
        raise InvalidInput("a message needs non-empty text", code="invalid_message")
    if len(idempotency_key) > 200:
        raise InvalidInput("idempotency_key may have at most 200 characters")
    if Mob.objects.filter(pk=mob.pk, shutting_down=True).exists():
        raise ShuttingDown(f"mob {mob.mob_id!r} is shutting down: new dispatches are refused")
    if identity.state not in ACCEPTING_STATES:
        raise Conflict(
            f"identity {identity.key!r} is {identity.state}"
            + (f": {identity.broken_reason}" if identity.broken_reason else ""),
            code=f"identity_{identity.state}",
        )
    content_hash = hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()
    dedupe_key = f"ingress:{identity.key}:{origin}:{idempotency_key}" if idempotency_key else None
    with transaction.atomic():
        frame, created = console_append(
            mob=mob,
            kind=kind,
            identity=identity.key,
            payload={
                "text": text,
                "origin": origin,
                "idempotency_key": idempotency_key,
                "content_hash": content_hash,
                **(extra or {}),
            },
            dedupe_key=dedupe_key,
            source_kind="send",
            next_attempt_at=delivery_deadline(),  # the sweep's safety net if this dispatch is lost
        )
        if not created:
            if frame.payload.get("content_hash") != content_hash:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was used for different content",
                    details={"cursor": frame.cursor},
                )
            return _acceptance(frame, replayed=True)
        from mobs_app.tasks import frame_deliver_task

        dispatch(frame_deliver_task, frame_pk=frame.pk, attempts=0)
    return _acceptance(frame, replayed=False)


def identity_send(*, mob: Mob, key: str, text: str, idempotency_key: str = "", origin: str = "console") -> dict:
    """Send to an addressable identity (``not_addressable`` for internal_only ones)."""
    identity = identity_get(mob=mob, key=key)
    if identity.addressability != Identity.Addressability.ADDRESSABLE:
        raise NotAddressable(f"identity {key!r} is internal_only: use dispatch with an origin")
    return _ingress(
        mob=mob, identity=identity, kind="send", text=text, origin=origin or "console", idempotency_key=idempotency_key
    )


def identity_dispatch(*, mob: Mob, key: str, text: str, origin: str, idempotency_key: str = "") -> dict:
    """Dispatch to any identity, internal_only included, from a named origin."""
    if origin not in DISPATCH_ORIGINS:
        raise InvalidInput(f"origin must be one of {', '.join(DISPATCH_ORIGINS)}", code="invalid_origin")
    identity = identity_get(mob=mob, key=key)
    return _ingress(
        mob=mob, identity=identity, kind="dispatch", text=text, origin=origin, idempotency_key=idempotency_key
    )


def member_reply_record(
    *,
    session_id: str,
    turn_id: str,
    text: str,
    source_keys: list[str] | tuple[str, ...] = (),
    continuity: Continuity | None = None,
) -> ConsoleFrame | None:
    """Put a member's committed turn on its mob's console as a ``reply`` frame (status completed),
    and mark the delivered frames it answered (inputs with ``source_key`` ``mob:<pk>:console:<seq>``)
    completed. Idempotent by turn; does nothing for a session that belongs to no mob member or a
    turn with no text. ``continuity``: the session's record (with ``identity__mob__workspace``)
    if the caller just read it."""
    if continuity is None and text:
        continuity = Continuity.objects.select_related("identity__mob__workspace").filter(session_id=session_id).first()
    if continuity is None or not text:
        return None
    identity = continuity.identity
    mob = identity.mob
    frame, _ = console_append(
        mob=mob,
        kind="reply",
        identity=identity.key,
        session_id=session_id,
        payload={"text": text, "turn_id": turn_id},
        dedupe_key=f"reply:{session_id}:{turn_id}",
        status=ConsoleFrame.Status.COMPLETED,
        source_kind="member",
    )
    prefix = f"mob:{mob.pk}:console:"
    seqs = [
        int(k.removeprefix(prefix)) for k in source_keys if k.startswith(prefix) and k.removeprefix(prefix).isdigit()
    ]
    for answered in ConsoleFrame.objects.filter(mob=mob, seq__in=seqs, status=ConsoleFrame.Status.DELIVERED):
        console_update(frame=answered, status=ConsoleFrame.Status.COMPLETED, expect_status="delivered")
    return frame


# --- peers ----------------------------------------------------------------------------------


def peers_list(*, identity: Identity) -> list[dict[str, Any]]:
    """The identities wired to this one, with what a model needs to choose one."""
    mob = identity.mob
    keys = set(Edge.objects.filter(mob=mob, a=identity.key).values_list("b", flat=True))
    keys |= set(Edge.objects.filter(mob=mob, b=identity.key).values_list("a", flat=True))
    profiles = mob.definition.get("profiles", {})
    peers = Identity.objects.filter(mob=mob, key__in=keys).exclude(state=Identity.State.RETIRED).order_by("key")
    return [
        {
            "key": peer.key,
            "display_name": peer.display_name,
            "profile": peer.profile,
            "description": profiles.get(peer.profile, {}).get("peer_description", ""),
            "state": peer.state,
        }
        for peer in peers
    ]


def _resolve_peer(sender: Identity, address: str) -> Identity:
    member, mob_ref = parse_address(address)
    mob = sender.mob
    if mob_ref is None or mob_ref == mob.mob_id:
        target = identity_get(mob=mob, key=member)
        a, b = sorted((sender.key, target.key))
        if sender.key == target.key or not Edge.objects.filter(mob=mob, a=a, b=b).exists():
            raise Conflict(f"{sender.key!r} is not wired to {target.key!r}", code="not_wired")
        allowed, violation = topology_check(mob.definition, sender.profile, target.profile)
        if violation:
            ledger_append(
                mob=mob,
                kind="topology_violation",
                identity=sender.key,
                data={"to": target.key, "from_role": sender.profile, "to_role": target.profile, "allowed": allowed},
            )
        if not allowed:
            raise TopologyDenied(
                f"strict topology forbids {sender.profile!r} -> {target.profile!r} ({sender.key} -> {target.key})"
            )
        return target
    contact = Contact.objects.filter(workspace=mob.workspace, mob_ref=mob_ref).first()
    if contact is None:
        raise NotFound(f"mob {mob_ref!r} is not in the contact directory", code="unknown_contact")
    kind, _ = parse_transport(contact.transport)
    if kind != "inproc":
        raise Conflict(
            f"transport {contact.transport!r} for mob {mob_ref!r} is not supported yet; only inproc delivery works",
            code="transport_unsupported",
        )
    other = Mob.objects.select_related("workspace", "active_revision").filter(workspace=mob.workspace, mob_id=mob_ref)
    if not other.exists():
        raise NotFound(f"mob {mob_ref!r} (inproc) does not exist in this workspace", code="unknown_contact")
    target = identity_get(mob=other.get(), key=member)
    if target.addressability != Identity.Addressability.ADDRESSABLE:
        raise NotAddressable(f"identity {member!r} of mob {mob_ref!r} is internal_only")
    return target


def peer_send(*, sender: Identity, to: str, text: str, idempotency_key: str = "") -> dict[str, Any]:
    """A member's message to a peer (``key`` or ``key::mob``): it reaches the peer's session as
    queued input and is recorded in the receiving mob's console log."""
    target = _resolve_peer(sender, to)
    return _ingress(
        mob=target.mob,
        identity=target,
        kind="peer_message",
        text=text,
        origin=f"peer:{sender.key}",
        idempotency_key=idempotency_key,
        extra={"from": sender.key, "from_mob": sender.mob.mob_id if target.mob_id != sender.mob_id else ""},
    )


def identity_for_session(*, session_id: str) -> Identity | None:
    record = (
        Continuity.objects.select_related("identity__mob__workspace", "identity__mob__active_revision")
        .filter(session_id=session_id)
        .first()
    )
    return record.identity if record else None
