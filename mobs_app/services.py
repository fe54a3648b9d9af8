"""Writes for mobs: definitions and revisions, the roster, materialization, lifecycle, bootstrap
and topology. Messaging lives in ``mobs_app.messaging``; the timelines in ``mobs_app.journal``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from lashops.core.models import Workspace
from lashops.core.runner import dispatch
from lashops.core.services import lease_acquire as core_lease_acquire
from lashops.core.services import lease_release as core_lease_release
from lashops.core.services import lease_renew as core_lease_renew
from mobs_app import hooks
from mobs_app.continuity import continuity_bind
from mobs_app.definition import identity_key_problem, max_sessions_of, parse_definition
from mobs_app.errors import (
    CapacityExceeded,
    Conflict,
    InvalidInput,
    LeaseHeld,
    LeaseLost,
    NotFound,
    UnknownIdentity,
)
from mobs_app.journal import ledger_append, ledger_append_many
from mobs_app.leases import Acquired, identity_lease_acquire, lease_holder_id, lease_provider
from mobs_app.members import MemberSessions, MemberSpec, member_session_id, member_sessions
from mobs_app.models import Continuity, Edge, Identity, Mob, MobDefinition, Profile
from mobs_app.topology import canonical, wiring_edges

log = logging.getLogger(__name__)

MAX_WARM_CONCURRENCY = 16
LIVE_STATES = (Identity.State.DORMANT, Identity.State.WARMING, Identity.State.ACTIVE, Identity.State.BROKEN)


# --- lookups used by every entry point ------------------------------------------------------


def mob_get(*, workspace: Workspace, mob_id: str) -> Mob:
    mob = Mob.objects.select_related("workspace", "active_revision").filter(workspace=workspace, mob_id=mob_id).first()
    if mob is None:
        raise NotFound(f"no mob {mob_id!r} in this workspace")
    return mob


def identity_get(*, mob: Mob, key: str) -> Identity:
    identity = (
        Identity.objects.select_related("mob__workspace", "mob__active_revision").filter(mob=mob, key=key).first()
    )
    if identity is None:
        raise UnknownIdentity(f"mob {mob.mob_id!r} has no identity {key!r}")
    return identity


# --- definitions ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    mob: Mob
    definition: MobDefinition
    created: bool  # a new revision was stored
    reconcile: dict[str, list[str]] = field(default_factory=dict)


def mob_load(*, workspace: Workspace, source: str) -> LoadResult:
    """Validate a TOML definition and make it the mob's active revision (a new revision when the
    text changed). An invalid definition raises ``DefinitionInvalid`` and changes nothing. A
    ``[roster]`` is reconciled against the identities the definition declared before."""
    parsed = parse_definition(source)
    with transaction.atomic():
        mob, _ = Mob.objects.select_for_update().get_or_create(
            workspace=workspace,
            mob_id=parsed.mob_id,
            defaults={"max_sessions": settings.LASHOPS_MOB_MAX_SESSIONS},
        )
        mob = Mob.objects.select_related("workspace", "active_revision").get(pk=mob.pk)
        current = mob.active_revision
        if current is not None and current.source == source:
            return LoadResult(mob=mob, definition=current, created=False)
        revision = (current.revision if current else 0) + 1
        definition = MobDefinition.objects.create(mob=mob, revision=revision, source=source, data=parsed.data)
        Profile.objects.bulk_create(
            [
                Profile(
                    definition=definition,
                    name=name,
                    model=spec["model"],
                    provider=spec["provider"],
                    runtime_mode=spec["runtime_mode"],
                    peer_description=spec["peer_description"],
                    tools=spec["tools"],
                    skills=spec["skills"],
                    external_addressable=spec["external_addressable"],
                )
                for name, spec in parsed.profiles.items()
            ]
        )
        mob.active_revision = definition
        mob.max_sessions = max_sessions_of(parsed.data, settings.LASHOPS_MOB_MAX_SESSIONS)
        mob.save(update_fields=["active_revision", "max_sessions", "updated_at"])
        ledger_append(mob=mob, kind="definition_loaded", data={"revision": revision})
        report: dict[str, list[str]] = {}
        if parsed.roster is not None:
            report = roster_reconcile(mob=mob, desired=parsed.roster, source=Identity.Source.DEFINITION)
        edges_reconcile(mob=mob)
    return LoadResult(mob=mob, definition=definition, created=True, reconcile=report)


# --- the roster -----------------------------------------------------------------------------


def _check_spec(mob: Mob, spec: dict[str, Any]) -> None:
    problem = identity_key_problem(spec.get("key"))
    if problem:
        raise InvalidInput(problem, code="invalid_identity", details={"key": spec.get("key")})
    profiles = mob.definition.get("profiles", {})
    profile = spec.get("profile", "")
    if profile not in profiles:
        raise InvalidInput(
            f"profile {profile!r} is not defined in mob {mob.mob_id!r} (have: {', '.join(sorted(profiles))})",
            code="unknown_profile",
        )
    if not profiles[profile]["tools"].get("comms"):
        raise InvalidInput(
            f"profile {profile!r} lacks tools.comms = true: a mob member needs comms, so it cannot spawn",
            code="comms_required",
        )
    if spec.get("addressability", "addressable") not in Identity.Addressability.values:
        raise InvalidInput("addressability must be addressable or internal_only", code="invalid_identity")


def _identity_row(mob: Mob, spec: dict[str, Any], source: str) -> Identity:
    return Identity(
        mob=mob,
        key=spec["key"],
        profile=spec["profile"],
        addressability=spec.get("addressability") or "addressable",
        display_name=spec.get("display_name") or "",
        labels=spec.get("labels") or {},
        context=spec.get("context") or {},
        initial_message=spec.get("initial_message") or "",
        source=source,
        revision=mob.active_revision.revision if mob.active_revision_id else 0,  # type: ignore[union-attr]  # active_revision_id checked
    )


def identities_register(*, mob: Mob, specs: list[dict[str, Any]], source: str = Identity.Source.API) -> int:
    """Register identities as dormant (metadata only: no session, no lease, no continuity write),
    in bulk. Refuses keys already present. Returns how many were registered."""
    if not specs:
        return 0
    for spec in specs:
        _check_spec(mob, spec)
    keys = [spec["key"] for spec in specs]
    if len(set(keys)) != len(keys):
        raise InvalidInput("duplicate identity keys in one registration", code="invalid_identity")
    with transaction.atomic():
        taken = list(Identity.objects.filter(mob=mob, key__in=keys).values_list("key", flat=True)[:5])
        if taken:
            raise Conflict(f"identity already registered: {', '.join(taken)}", code="identity_exists")
        Identity.objects.bulk_create([_identity_row(mob, spec, source) for spec in specs], batch_size=500)
        entries = [("member_registered", spec["key"], {"profile": spec["profile"]}) for spec in specs[:1]]
        if len(specs) > 1:
            entries = [("roster_registered", "", {"count": len(specs), "source": source})]
        ledger_append_many(mob=mob, entries=entries)
    return len(specs)


def identity_create(*, mob: Mob, spec: dict[str, Any]) -> Identity:
    """Register one identity (dormant) and wire it per the definition."""
    with transaction.atomic():
        identities_register(mob=mob, specs=[spec])
        edges_reconcile(mob=mob)
    return identity_get(mob=mob, key=spec["key"])


_RELOADABLE = ("addressability", "display_name", "labels", "context", "initial_message")


def compute_reconcile_actions(
    desired: list[dict[str, Any]], current: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """Desired roster vs current identities (key -> spec): new -> activate, removed -> retire,
    same profile with other changes -> hot_reload, profile changed -> respawn."""
    actions: dict[str, list[str]] = {"activate": [], "retire": [], "hot_reload": [], "respawn": []}
    wanted = {spec["key"]: spec for spec in desired}
    for key, spec in wanted.items():
        have = current.get(key)
        if have is None:
            actions["activate"].append(key)
        elif have["profile"] != spec["profile"]:
            actions["respawn"].append(key)
        elif any((have.get(f) or None) != (spec.get(f) or None) for f in _RELOADABLE):
            actions["hot_reload"].append(key)
    actions["retire"] = sorted(key for key in current if key not in wanted)
    return actions


def roster_reconcile(*, mob: Mob, desired: list[dict[str, Any]], source: str = Identity.Source.DEFINITION) -> dict:
    """Converge the identities of ``source`` onto ``desired``. Identities from other sources are
    left alone. Returns the actions taken."""
    current = {
        ident.key: {"profile": ident.profile, **{f: getattr(ident, f) for f in _RELOADABLE}}
        for ident in Identity.objects.filter(mob=mob, source=source, state__in=LIVE_STATES)
    }
    actions = compute_reconcile_actions(desired, current)
    by_key = {spec["key"]: spec for spec in desired}
    retired_ids = set(
        Identity.objects.filter(mob=mob, key__in=actions["activate"], source=source).values_list("key", flat=True)
    )
    fresh = [by_key[key] for key in actions["activate"] if key not in retired_ids]
    identities_register(mob=mob, specs=fresh, source=source)
    for key in sorted(retired_ids):  # declared again after a retire: a new life
        spec = by_key[key]
        Identity.objects.filter(mob=mob, key=key).update(
            profile=spec["profile"],
            state=Identity.State.DORMANT,
            broken_reason="",
            **{f: spec.get(f) or ({} if f in ("labels", "context") else "") for f in _RELOADABLE},
        )
    for key in actions["hot_reload"]:
        spec = by_key[key]
        Identity.objects.filter(mob=mob, key=key).update(
            **{f: spec.get(f) or ({} if f in ("labels", "context") else "") for f in _RELOADABLE},
            revision=mob.active_revision.revision,  # type: ignore[union-attr]  # a mob with members has an active revision
        )
    for key in actions["respawn"]:
        identity = identity_get(mob=mob, key=key)
        Identity.objects.filter(pk=identity.pk).update(profile=by_key[key]["profile"])
        if Continuity.objects.filter(pk=identity.pk).exclude(session_id="").exists():
            transaction.on_commit(lambda pk=identity.pk: _reset_quietly(pk))  # type: ignore[misc]  # default binds the loop value
    for key in actions["retire"]:
        transaction.on_commit(lambda key=key: _retire_quietly(mob.pk, key))  # type: ignore[misc]  # default binds the loop value
    transaction.on_commit(lambda: hooks.run("post_reconcile", mob, actions))
    return actions


def _reset_quietly(identity_pk: int) -> None:
    try:
        identity_reset(identity=Identity.objects.select_related("mob__workspace").get(pk=identity_pk))
    except Exception as exc:
        log.warning("respawn of identity %s failed: %s", identity_pk, exc)


def _retire_quietly(mob_pk: int, key: str) -> None:
    try:
        identity_retire(identity=Identity.objects.select_related("mob__workspace").get(mob_id=mob_pk, key=key))
    except Exception as exc:
        log.warning("retire of %s in mob %s failed: %s", key, mob_pk, exc)


# --- capacity -------------------------------------------------------------------------------


def _capacity_take(mob: Mob) -> None:
    taken = Mob.objects.filter(pk=mob.pk, session_count__lt=F("max_sessions")).update(
        session_count=F("session_count") + 1
    )
    if not taken:
        limit = Mob.objects.filter(pk=mob.pk).values_list("max_sessions", flat=True).get()
        raise CapacityExceeded(f"Max sessions reached ({limit}/{limit})", details={"max_sessions": limit})


def _capacity_release(mob: Mob) -> None:
    Mob.objects.filter(pk=mob.pk, session_count__gt=0).update(session_count=F("session_count") - 1)


# --- materialization ------------------------------------------------------------------------


def member_capabilities(profile: dict[str, Any]) -> dict[str, bool]:
    """The member's tools: the profile's flags, with shell off unless the platform enables it."""
    tools = dict(profile.get("tools", {}))
    tools["shell"] = bool(tools.get("shell")) and settings.LASHOPS_MOB_SHELL_ENABLED
    return tools


def _model_of(profile: dict[str, Any]) -> dict[str, Any]:
    default_provider = settings.LASHOPS_DEFAULT_MODEL.partition(":")[0]
    return {"provider": profile.get("provider") or default_provider, "model": profile["model"], "parameters": {}}


def member_spec(identity: Identity) -> MemberSpec:
    mob = identity.mob
    definition = mob.definition
    profile = definition["profiles"][identity.profile]
    skills = [definition["skills"][name]["content"] for name in profile.get("skills", [])]
    lines = [
        f"You are {identity.display_name or identity.key}, a member of the mob {mob.mob_id!r} "
        f"with the role {identity.profile!r}.",
    ]
    if profile.get("peer_description"):
        lines.append(f"Your role: {profile['peer_description']}")
    lines += [f"Skill: {text}" for text in skills if text]
    if identity.context:
        lines.append(f"Context: {identity.context}")
    return MemberSpec(
        mob_id=mob.mob_id,
        identity=identity.key,
        profile=identity.profile,
        model=_model_of(profile),
        system_prompt="\n".join(lines),
        tools=member_capabilities(profile),
        labels=dict(identity.labels),
        context=dict(identity.context),
    )


def _mark_broken(identity: Identity, reason: str, *, category: str = "identity_materialization_failure") -> None:
    with transaction.atomic():
        Identity.objects.filter(pk=identity.pk).update(state=Identity.State.BROKEN, broken_reason=reason[:2000])
        ledger_append(mob=identity.mob, kind="member_broken", identity=identity.key, data={"reason": reason[:500]})
    hooks.run("on_error", identity.mob, category, identity.key, reason)


def _wait_settled(identity: Identity) -> Identity:
    deadline = time.monotonic() + settings.LASHOPS_MOB_MATERIALIZE_WAIT
    while True:
        state, reason = Identity.objects.filter(pk=identity.pk).values_list("state", "broken_reason").get()
        if state != Identity.State.WARMING:
            break
        if time.monotonic() > deadline:
            raise Conflict(f"identity {identity.key!r} is still warming", code="materialization_timeout")
        time.sleep(0.02)
    if state == Identity.State.BROKEN:
        raise Conflict(f"identity {identity.key!r} is broken: {reason}", code="identity_broken")
    if state != Identity.State.ACTIVE:
        raise Conflict(f"identity {identity.key!r} is {state}", code=f"identity_{state}")
    return identity_get(mob=identity.mob, key=identity.key)


class _ClaimedMeanwhile(Exception):
    pass


def identity_materialize(*, identity: Identity, retry_broken: bool = False) -> Identity:
    """Make a registered identity a live member: resume its session when continuity is ready,
    else create one. Concurrent callers coalesce: one claims the identity (dormant -> warming by
    conditional UPDATE) and materializes; the others wait for the outcome. A failure marks only
    this identity broken, with the reason, and raises ``identity_broken``."""
    claimable = [Identity.State.DORMANT] + ([Identity.State.BROKEN] if retry_broken else [])
    if not Identity.objects.filter(pk=identity.pk, state__in=claimable).exists():
        return _wait_settled(identity)
    grant = _identity_claim(identity, claimable)
    if grant is None:
        return _wait_settled(identity)  # another caller claimed it first: coalesce
    mob = identity.mob
    took_capacity = False
    try:
        record = Continuity.objects.filter(pk=identity.pk).first()
        resume = record is not None and bool(record.session_id)
        generation = record.generation if record else 0
        version = record.checkpoint_version if record else 0
        spec = member_spec(identity)
        backend = member_sessions()
        if resume:
            session_id = backend.open(workspace=mob.workspace, session_id=record.session_id, spec=spec, resume=True)  # type: ignore[union-attr]  # resume: record exists
        else:
            _capacity_take(mob)
            took_capacity = True
            session_id = _member_spawn(backend, mob=mob, identity=identity, spec=spec, generation=generation)
        _member_activate(
            identity=identity,
            mob=mob,
            grant=grant,
            session_id=session_id,
            generation=generation,
            version=version,
            spawned_profile=None if resume else spec.profile,
        )
        if not resume:
            _member_spawned(backend, mob=mob, identity=identity, session_id=session_id, generation=generation)
    except CapacityExceeded as exc:
        Identity.objects.filter(pk=identity.pk, state=Identity.State.WARMING).update(state=Identity.State.DORMANT)
        hooks.run("on_error", mob, "spawn_failure", identity.key, exc.message)
        raise
    except Exception as exc:
        if took_capacity:
            _capacity_release(mob)
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        _mark_broken(identity, reason)
        raise Conflict(f"identity {identity.key!r} is broken: {reason}", code="identity_broken") from exc
    finally:
        lease_provider().release(identity.lease_key, token=grant.token)
    return identity_get(mob=mob, key=identity.key)


def _identity_claim(identity: Identity, claimable: Sequence[str]) -> Acquired | None:
    """Take the identity lease and claim the identity (-> warming); None when another caller
    claimed it first (the caller coalesces). The identity lease and the claim commit together,
    the lease first (the order of every writer under the lease): a warming identity always has
    a live lease of its claimant, which is how the warming sweep tells a claimant that died
    (mobs_app.warming); one killed before the commit claimed nothing."""
    try:
        with transaction.atomic():
            grant = identity_lease_acquire(key=identity.lease_key)
            if not Identity.objects.filter(pk=identity.pk, state__in=claimable).update(
                state=Identity.State.WARMING, broken_reason="", updated_at=timezone.now()
            ):
                raise _ClaimedMeanwhile  # rolls the lease back with it
    except _ClaimedMeanwhile:
        lease_provider().release(identity.lease_key, token=grant.token)  # a provider outside the database
        return None
    except LeaseHeld:
        if Identity.objects.filter(pk=identity.pk, state=Identity.State.WARMING).exists():
            return None
        raise
    return grant


def _member_spawn(backend: MemberSessions, *, mob: Mob, identity: Identity, spec: MemberSpec, generation: int) -> str:
    """Open a new member session for ``identity`` (the ``before_create`` hook may change the
    model, prompt and labels first). Returns its id."""
    request: dict[str, Any] = {"model": spec.model, "system_prompt": spec.system_prompt, "labels": spec.labels}
    hooks.run_strict("before_create", request)
    spec.model, spec.system_prompt, spec.labels = request["model"], request["system_prompt"], request["labels"]
    session_id = member_session_id(mob_pk=mob.pk, identity=identity.key, generation=generation)
    session_id = backend.open(workspace=mob.workspace, session_id=session_id, spec=spec, resume=False)
    hooks.run("after_create", session_id, {"model": spec.model, "labels": spec.labels})
    return session_id


def _member_activate(
    *,
    identity: Identity,
    mob: Mob,
    grant: Acquired,
    session_id: str,
    generation: int,
    version: int,
    spawned_profile: str | None,
) -> None:
    """One transaction: bind continuity under the lease, mark the identity active, and append
    ``member_materialized`` (and ``member_spawned`` for a new session: ``spawned_profile``)."""
    resume = spawned_profile is None
    with transaction.atomic():
        continuity_bind(
            identity=identity,
            token=grant.token,
            session_id=session_id,
            generation=generation,
            checkpoint_version=version,
            runtime_instance=grant.holder,
        )
        Identity.objects.filter(pk=identity.pk).update(
            state=Identity.State.ACTIVE,
            materializations=F("materializations") + 1,
            revision=mob.active_revision.revision,  # type: ignore[union-attr]  # a mob with members has an active revision
        )
        entries = [
            (
                "member_materialized",
                identity.key,
                {"session_id": session_id, "resumed": resume, "generation": generation},
            )
        ]
        if not resume:
            entries.append(("member_spawned", identity.key, {"session_id": session_id, "profile": spawned_profile}))
        ledger_append_many(mob=mob, entries=entries)


def _member_spawned(backend: MemberSessions, *, mob: Mob, identity: Identity, session_id: str, generation: int) -> None:
    """After a new member session is active: its initial message, then the ``post_spawn`` hook."""
    if identity.initial_message:
        backend.deliver(
            workspace=mob.workspace,
            session_id=session_id,
            text=identity.initial_message,
            source_key=f"mob:{mob.pk}:initial:{identity.pk}:g{generation}",
        )
    hooks.run("post_spawn", mob, identity.key, session_id)


# --- lifecycle ------------------------------------------------------------------------------


@contextmanager
def _identity_leased(identity: Identity) -> Iterator[tuple[Acquired, Identity]]:
    """Hold the identity lease for one operation (released on exit). Yields the grant and the
    identity as read under the lease: a contender that held it before may have changed its state
    or deleted it (``UnknownIdentity``). Raises ``IdentityBusy`` while another caller holds it."""
    grant = identity_lease_acquire(key=identity.lease_key)
    try:
        yield grant, identity_get(mob=identity.mob, key=identity.key)
    finally:
        lease_provider().release(identity.lease_key, token=grant.token)


def identity_retire(*, identity: Identity) -> dict[str, Any]:
    """Retire under the identity lease: the member goes ``retiring`` (returned with the fencing
    token), its managed edges are dropped and it ends ``retired`` with its session kept readable.
    Retiring a retired identity changes nothing (``fencing_token`` None)."""
    done = {"identity": identity.key, "state": identity.state, "fencing_token": None}
    if identity.state in (Identity.State.RETIRING, Identity.State.RETIRED):
        return done
    with _identity_leased(identity) as (grant, identity):
        if identity.state in (Identity.State.RETIRING, Identity.State.RETIRED):
            return {**done, "state": identity.state}
        mob = identity.mob
        with transaction.atomic():
            lease_provider().check(identity.lease_key, token=grant.token, lock=True)
            # Under the lease only an active member holds capacity: a ``warming`` one is a claim
            # whose materializer has not got the lease, and it takes capacity only under it.
            had_session = Identity.objects.filter(pk=identity.pk, state=Identity.State.ACTIVE).exists()
            Identity.objects.filter(pk=identity.pk).update(state=Identity.State.RETIRING)
            Continuity.objects.filter(pk=identity.pk, fencing_token__lte=grant.token).update(fencing_token=grant.token)
            ledger_append(mob=mob, kind="member_retiring", identity=identity.key, data={"token": grant.token})
        with transaction.atomic():
            if had_session:
                _capacity_release(mob)
            Identity.objects.filter(pk=identity.pk, state=Identity.State.RETIRING).update(state=Identity.State.RETIRED)
            ledger_append(mob=mob, kind="member_retired", identity=identity.key, data={"token": grant.token})
            edges_reconcile(mob=mob)
    return {"identity": identity.key, "state": Identity.State.RETIRED, "fencing_token": grant.token}


def identity_reset(*, identity: Identity) -> Identity:
    """Destructive reset: generation + 1, checkpoint version 0, a new session id; the lease token
    advances, so the previous holder's late writes are rejected."""
    with _identity_leased(identity) as (grant, identity):
        mob = identity.mob
        record = Continuity.objects.filter(pk=identity.pk).first()
        generation = (record.generation + 1) if record else 1
        session_id = member_session_id(mob_pk=mob.pk, identity=identity.key, generation=generation)
        if identity.state == Identity.State.ACTIVE:
            member_sessions().open(
                workspace=mob.workspace, session_id=session_id, spec=member_spec(identity), resume=False
            )
        elif identity.state != Identity.State.DORMANT:
            session_id = ""  # never ran, or broken: bound on the next materialization
        with transaction.atomic():
            continuity_bind(
                identity=identity,
                token=grant.token,
                session_id=session_id,
                generation=generation,
                checkpoint_version=0,
                runtime_instance=grant.holder,
            )
            if identity.state == Identity.State.BROKEN:
                Identity.objects.filter(pk=identity.pk).update(state=Identity.State.DORMANT, broken_reason="")
            ledger_append(
                mob=mob,
                kind="member_reset",
                identity=identity.key,
                data={"generation": generation, "token": grant.token},
            )
    return identity_get(mob=mob, key=identity.key)


def identity_reload(*, identity: Identity) -> Identity:
    """Non-destructive: the member picks up the active revision; same session and generation."""
    with _identity_leased(identity) as (grant, identity):
        mob = identity.mob
        record = Continuity.objects.filter(pk=identity.pk).first()
        if identity.state == Identity.State.ACTIVE and record and record.session_id:
            member_sessions().open(
                workspace=mob.workspace, session_id=record.session_id, spec=member_spec(identity), resume=True
            )
        with transaction.atomic():
            lease_provider().check(identity.lease_key, token=grant.token, lock=True)
            Identity.objects.filter(pk=identity.pk).update(revision=mob.active_revision.revision)  # type: ignore[union-attr]  # a mob with members has an active revision
            ledger_append(
                mob=mob,
                kind="member_reloaded",
                identity=identity.key,
                data={"revision": mob.active_revision.revision},  # type: ignore[union-attr]  # a mob with members has an active revision
            )
    return identity_get(mob=mob, key=identity.key)


def identity_delete(*, identity: Identity) -> None:
    """Remove the identity, its continuity and its edges; it then resolves Uninitialized."""
    with _identity_leased(identity) as (grant, identity):
        mob = identity.mob
        with transaction.atomic():
            lease_provider().check(identity.lease_key, token=grant.token, lock=True)
            if Identity.objects.filter(pk=identity.pk, state=Identity.State.ACTIVE).exists():
                _capacity_release(mob)
            Edge.objects.filter(mob=mob, a=identity.key).delete()
            Edge.objects.filter(mob=mob, b=identity.key).delete()
            identity.delete()
            ledger_append(mob=mob, kind="member_deleted", identity=identity.key)


def mob_drain(*, mob: Mob, shutting_down: bool = True) -> Mob:
    """While shutting down, new sends and dispatches are refused (``shutting_down``)."""
    with transaction.atomic():
        Mob.objects.filter(pk=mob.pk).update(shutting_down=shutting_down)
        ledger_append(mob=mob, kind="draining" if shutting_down else "resumed")
    mob.shutting_down = shutting_down
    return mob


# --- bootstrap and warming ------------------------------------------------------------------


WARM_LEASE_SCOPE = "mob_warm"


def mob_bootstrap(*, mob: Mob, mode: str, concurrency: int | None = None) -> dict[str, Any]:
    """Apply a bootstrap mode: ``eager`` materializes every dormant identity now, ``lazy`` only
    registers (no session), ``lazy_background_warm`` warms on the runner with 1..16 at a time.
    A warm (eager or background) is recorded (``warm_requested_at``) in the same transaction as
    the mode, so it is finished by the warming sweep if the process that started it ends first."""
    if mode not in Mob.Bootstrap.values:
        raise InvalidInput(f"mode must be one of {', '.join(Mob.Bootstrap.values)}", code="invalid_bootstrap")
    warm = mode == Mob.Bootstrap.LAZY_BACKGROUND_WARM
    if warm and (concurrency is None or not 1 <= concurrency <= MAX_WARM_CONCURRENCY):
        raise InvalidInput(
            f"concurrency must be between 1 and {MAX_WARM_CONCURRENCY} for lazy_background_warm (got {concurrency})",
            code="invalid_bootstrap",
        )
    with transaction.atomic():
        Mob.objects.filter(pk=mob.pk).update(
            bootstrap_mode=mode,
            warm_concurrency=concurrency or mob.warm_concurrency,
            bootstrap_error="",
            warm_requested_at=None if mode == Mob.Bootstrap.LAZY else timezone.now(),
        )
        ledger_append(mob=mob, kind="bootstrap", data={"mode": mode, "concurrency": concurrency})
        if mode == Mob.Bootstrap.LAZY_BACKGROUND_WARM:
            from mobs_app.tasks import mob_warm_task

            dispatch(mob_warm_task, mob_pk=mob.pk, concurrency=concurrency)
    mob.refresh_from_db()
    if mode == Mob.Bootstrap.EAGER:
        mob_warm(mob=mob, concurrency=1)
    return bootstrap_status(mob=mob)


def mob_warm(*, mob: Mob, concurrency: int) -> dict[str, int]:
    """Materialize every dormant identity with at most ``concurrency`` at once, under the mob's
    warm lease (one warmer per mob: another caller gets ``{"skipped": 1}`` at once; the lease is
    renewed before each identity, and a warmer that lost it stops). One broken identity does not
    stop the others; no identity is warmed twice (each is claimed dormant -> warming). The warm
    request is cleared when nothing is left to warm, or when a pass made no progress (capacity,
    contention: the identities stay dormant for on-demand materialization); until then the warming
    sweep re-dispatches it whenever no live warmer holds the lease. Returns counts of outcomes."""
    concurrency = max(1, min(MAX_WARM_CONCURRENCY, concurrency))
    ttl = settings.LASHOPS_MOB_LEASE_TTL
    key = str(mob.pk)
    try:
        grant = core_lease_acquire(scope=WARM_LEASE_SCOPE, key=key, holder=lease_holder_id(), ttl=ttl)
    except LeaseHeld:
        return {"materialized": 0, "failed": 0, "skipped": 1}
    lost = threading.Event()
    try:
        requested = Mob.objects.filter(pk=mob.pk).values_list("warm_requested_at", flat=True).first()
        pks = list(
            Identity.objects.filter(mob=mob, state=Identity.State.DORMANT).order_by("pk").values_list("pk", flat=True)
        )

        def one(pk: int) -> bool | None:
            if lost.is_set():
                return None
            try:
                core_lease_renew(scope=WARM_LEASE_SCOPE, key=key, token=grant.token, ttl=ttl)
            except LeaseLost:
                lost.set()  # another warmer took over (this one was presumed dead)
                return None
            try:
                identity = Identity.objects.select_related("mob__workspace", "mob__active_revision").get(pk=pk)
                identity_materialize(identity=identity)
                return True
            except Exception as exc:
                log.info("warming identity %s failed: %s", pk, exc)
                return False

        def pooled(pk: int) -> bool | None:
            try:
                return one(pk)
            finally:
                connection.close()

        results: list[bool | None] = []
        if concurrency > 1:
            try:
                with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mob-warm") as pool:
                    results = list(pool.map(pooled, pks))
            except RuntimeError as exc:  # "cannot schedule new futures after interpreter shutdown"
                log.warning("warming mob %s one identity at a time: %s", mob.pk, exc)
                results = []
        if not results:
            results = [one(pk) for pk in pks]
        outcome = {"materialized": sum(r is True for r in results), "failed": sum(r is False for r in results)}
        unfinished = Identity.objects.filter(
            mob=mob, state__in=(Identity.State.DORMANT, Identity.State.WARMING)
        ).exists()
        stuck = bool(pks) and not outcome["materialized"]
        if not lost.is_set() and (not unfinished or stuck):
            # Only the request this pass served: a newer one (a second bootstrap) stays pending.
            Mob.objects.filter(pk=mob.pk, warm_requested_at=requested).update(warm_requested_at=None)
        if outcome["failed"]:
            Mob.objects.filter(pk=mob.pk).update(bootstrap_error=f"{outcome['failed']} identity(ies) broken")
        return outcome
    finally:
        core_lease_release(scope=WARM_LEASE_SCOPE, key=key, token=grant.token)


def bootstrap_status(*, mob: Mob) -> dict[str, Any]:
    counts = {state: 0 for state in ("dormant", "warming", "active", "broken")}
    for row in Identity.objects.filter(mob=mob).values("state").annotate(n=Count("pk")):
        if row["state"] in counts:
            counts[row["state"]] = row["n"]
    mob = Mob.objects.get(pk=mob.pk)
    warming_wanted = mob.bootstrap_mode in (Mob.Bootstrap.EAGER, Mob.Bootstrap.LAZY_BACKGROUND_WARM)
    complete = counts["warming"] == 0 and (not warming_wanted or counts["dormant"] == 0)
    return {
        "mode": mob.bootstrap_mode,
        "concurrency": mob.warm_concurrency,
        "complete": complete,
        "ready": complete and counts["broken"] == 0,
        "error": mob.bootstrap_error,
        "counts": counts,
    }


# --- topology -------------------------------------------------------------------------------


def _desired_managed_edges(mob: Mob) -> dict[str, set[tuple[str, str]]]:
    members = list(
        Identity.objects.filter(mob=mob, state__in=LIVE_STATES).values_list("key", "profile").order_by("key")
    )
    desired: dict[str, set[tuple[str, str]]] = {Edge.Source.WIRING: wiring_edges(mob.definition, members)}
    if settings.LASHOPS_MOB_TOPOLOGY_PROVIDER:
        from lashops.runtime.tools import resolve_dotted_path

        provider = resolve_dotted_path(settings.LASHOPS_MOB_TOPOLOGY_PROVIDER)
        keys = {key for key, _ in members}
        desired[Edge.Source.PROVIDER] = {canonical(a, b) for a, b in provider(mob, members) if a in keys and b in keys}
    return desired


def edges_reconcile(*, mob: Mob) -> dict[str, Any]:
    """Converge managed edges (wiring, provider) on the current roster, whatever order members
    came up in. Removes only edges it manages, never operator edges."""
    report: dict[str, Any] = {"added": [], "removed": []}
    with transaction.atomic():
        for source, desired in _desired_managed_edges(mob).items():
            existing = {(e.a, e.b): e.pk for e in Edge.objects.filter(mob=mob, source=source)}
            add = sorted(desired - existing.keys())
            remove = sorted(existing.keys() - desired)
            Edge.objects.bulk_create([Edge(mob=mob, a=a, b=b, source=source) for a, b in add], ignore_conflicts=True)
            Edge.objects.filter(pk__in=[existing[pair] for pair in remove]).delete()
            report["added"] += [[a, b, source] for a, b in add]
            report["removed"] += [[a, b, source] for a, b in remove]
        entries = [("members_wired", "", {"a": a, "b": b, "source": s}) for a, b, s in report["added"]]
        entries += [("members_unwired", "", {"a": a, "b": b, "source": s}) for a, b, s in report["removed"]]
        ledger_append_many(mob=mob, entries=entries)
    hooks.run("post_reconcile", mob, report)
    return report


def edge_add(*, mob: Mob, a: str, b: str) -> Edge:
    """Operator edit: wire two identities (kept by every reconcile)."""
    a, b = canonical(a, b)
    found = set(Identity.objects.filter(mob=mob, key__in=[a, b]).values_list("key", flat=True))
    missing = {a, b} - found
    if missing:
        raise UnknownIdentity(f"mob {mob.mob_id!r} has no identity {sorted(missing)[0]!r}")
    with transaction.atomic():
        edge, created = Edge.objects.get_or_create(mob=mob, a=a, b=b, source=Edge.Source.OPERATOR)
        if created:
            ledger_append(mob=mob, kind="members_wired", data={"a": a, "b": b, "source": "operator"})
    return edge


def edge_remove(*, mob: Mob, a: str, b: str) -> int:
    """Operator edit: remove an operator edge."""
    a, b = canonical(a, b)
    with transaction.atomic():
        deleted, _ = Edge.objects.filter(mob=mob, a=a, b=b, source=Edge.Source.OPERATOR).delete()
        if deleted:
            ledger_append(mob=mob, kind="members_unwired", data={"a": a, "b": b, "source": "operator"})
    return deleted
