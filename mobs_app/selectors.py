"""Reads for mobs. Listing or inspecting identities never materializes them."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from lashops.core.models import Lease, Workspace
from mobs_app.leases import SCOPE
from mobs_app.models import ConsoleFrame, Edge, Identity, Mob


def mob_list(*, workspace: Workspace) -> QuerySet[Mob]:
    return Mob.objects.filter(workspace=workspace).select_related("active_revision").order_by("mob_id")


def identity_list(*, mob: Mob, state: str | None = None) -> QuerySet[Identity]:
    qs = Identity.objects.filter(mob=mob).select_related("continuity").order_by("key")
    return qs.filter(state=state) if state else qs


def edge_list(*, mob: Mob) -> QuerySet[Edge]:
    return Edge.objects.filter(mob=mob).order_by("a", "b", "source")


def identity_view(identity: Identity, lease: Lease | None = None) -> dict[str, Any]:
    record = getattr(identity, "continuity", None) if hasattr(identity, "continuity") else None
    return {
        "key": identity.key,
        "profile": identity.profile,
        "addressability": identity.addressability,
        "display_name": identity.display_name,
        "labels": identity.labels,
        "context": identity.context,
        "source": identity.source,
        "revision": identity.revision,
        "state": identity.state,
        "broken_reason": identity.broken_reason,
        "health": identity.state,
        "session_id": record.session_id if record else "",
        "continuity": (
            {
                "session_id": record.session_id,
                "generation": record.generation,
                "checkpoint_version": record.checkpoint_version,
                "fencing_token": record.fencing_token,
            }
            if record
            else None
        ),
        "lease": (
            {"holder": lease.holder, "token": lease.token, "expires_at": lease.expires_at}
            if lease is not None and lease.holder
            else None
        ),
    }


def identity_views(identities: list[Identity]) -> list[dict[str, Any]]:
    keys = [i.lease_key for i in identities]
    leases = {lease.key: lease for lease in Lease.objects.filter(scope=SCOPE, key__in=keys)}
    return [identity_view(i, leases.get(i.lease_key)) for i in identities]


# --- workspace of shared runner state (registered with lashops.core.tenancy) ---------------


def _pks(values: set[str]) -> set[int]:
    return {int(v) for v in values if v.isdigit()}


def mob_workspaces(mob_pks: set[str]) -> dict[str, int]:
    """``{mob pk: workspace id}`` for ``mob_pk`` task ids."""
    return {str(pk): ws for pk, ws in Mob.objects.filter(pk__in=_pks(mob_pks)).values_list("pk", "workspace_id")}


def identity_lease_workspaces(keys: set[str]) -> dict[str, int]:
    """``{identity lease key: workspace id}``; a key is ``<mob pk>:<identity key>``
    (``Identity.lease_key``), so only the mobs are looked up."""
    mobs = mob_workspaces({key.partition(":")[0] for key in keys})
    return {key: mobs[key.partition(":")[0]] for key in keys if key.partition(":")[0] in mobs}


def identity_workspaces(identity_pks: set[str]) -> dict[str, int]:
    """``{identity pk: workspace id}`` for ``identity_pk`` task ids."""
    rows = Identity.objects.filter(pk__in=_pks(identity_pks)).values_list("pk", "mob__workspace_id")
    return {str(pk): ws for pk, ws in rows}


def console_frame_workspaces(frame_pks: set[str]) -> dict[str, int]:
    """``{console frame pk: workspace id}`` for ``frame_pk`` task ids."""
    rows = ConsoleFrame.objects.filter(pk__in=_pks(frame_pks)).values_list("pk", "mob__workspace_id")
    return {str(pk): ws for pk, ws in rows}
