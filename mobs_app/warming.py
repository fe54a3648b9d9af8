"""Warming that outlives the process that asked for it.

A warm asked for by a bootstrap (``eager``, ``lazy_background_warm``) is a row
(``Mob.warm_requested_at``) until ``mob_warm`` finishes it, and a warmer works under the mob's warm
lease. If the process that warms ends first (a management command that exits, a worker killed),
``mob_warming_sweep`` (beat, or the in-process scheduler) finishes the work:

* identities left ``warming`` by a materializer that is gone go back to ``dormant``: a claim
  commits with the identity lease (``identity_materialize``), so a warming identity whose lease
  expired, or is held by a process gone from this host (fenced out at once), has no materializer
  any more; the mob's capacity count is then recomputed once nothing of the mob is warming (the
  dead materializer may have taken capacity it never used);
* every mob with a warm request and no live warmer gets a ``mob_warm`` task again (a warmer whose
  process is gone from this host is fenced out of the warm lease at once).

No identity is warmed twice: each materialization claims the identity (dormant -> warming) by a
conditional UPDATE, and a session re-opened for a recovered identity has the same id (per
identity and generation), so the one the dead warmer may have created is reused.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TypeGuard

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from lashops.core.heartbeat import holder_gone
from lashops.core.models import Lease
from lashops.core.runner import dispatch
from lashops.core.services import lease_fence
from mobs_app.leases import SCOPE as IDENTITY_LEASE_SCOPE
from mobs_app.models import Identity, Mob
from mobs_app.services import WARM_LEASE_SCOPE

log = logging.getLogger(__name__)

SWEEP_BATCH = 200


def _live_lease(lease: Lease | None, now: datetime) -> TypeGuard[Lease]:
    return lease is not None and bool(lease.holder) and lease.expires_at >= now  # type: ignore[operator]  # a held lease has an expiry


def identities_warming_recover(*, now: datetime | None = None) -> int:
    """Put identities whose materializer is gone back to ``dormant`` (see the module docstring).
    Returns how many were recovered. Only with the database lease provider: a plugged-in provider
    (``LASHOPS_MOB_LEASE_PROVIDER``) keeps its leases elsewhere, and its claims are left alone."""
    if settings.LASHOPS_MOB_LEASE_PROVIDER:
        return 0
    now = now or timezone.now()
    rows = list(
        Identity.objects.filter(state=Identity.State.WARMING)
        .order_by("pk")
        .values_list("pk", "mob_id", "key", "updated_at")[:SWEEP_BATCH]
    )
    if not rows:
        return 0
    keys = [f"{mob_pk}:{key}" for _, mob_pk, key, _ in rows]
    leases = {lease.key: lease for lease in Lease.objects.filter(scope=IDENTITY_LEASE_SCOPE, key__in=keys)}
    recovered, mobs = 0, set()
    for (pk, mob_pk, key, claimed_at), lease_key in zip(rows, keys, strict=True):
        lease = leases.get(lease_key)
        if _live_lease(lease, now):
            if not holder_gone(lease.holder):
                continue  # a live materializer is at work
            lease_fence(scope=IDENTITY_LEASE_SCOPE, key=lease_key, holder=lease.holder)
        if Identity.objects.filter(pk=pk, state=Identity.State.WARMING, updated_at=claimed_at).update(
            state=Identity.State.DORMANT, updated_at=now
        ):
            recovered += 1
            mobs.add(mob_pk)
            log.info("identity %s of mob %s: its materializer is gone; dormant again", key, mob_pk)
    for mob_pk in mobs:
        _capacity_resync(mob_pk)
    return recovered


def _capacity_resync(mob_pk: int) -> None:
    """Capacity = active members, recomputed in one statement while nothing of the mob is warming
    (a materializer takes capacity only while its identity is warming)."""
    active = (
        Identity.objects.filter(mob_id=OuterRef("pk"), state=Identity.State.ACTIVE)
        .values("mob_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    warming = Identity.objects.filter(mob_id=OuterRef("pk"), state=Identity.State.WARMING)
    Mob.objects.filter(pk=mob_pk).exclude(Exists(warming)).update(session_count=Coalesce(Subquery(active), 0))


def _warmer_alive(mob_pk: int, now: datetime) -> bool:
    lease = Lease.objects.filter(scope=WARM_LEASE_SCOPE, key=str(mob_pk)).first()
    if not _live_lease(lease, now):
        return False
    if holder_gone(lease.holder):
        lease_fence(scope=WARM_LEASE_SCOPE, key=str(mob_pk), holder=lease.holder)
        return False
    return True


def mob_warming_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Recover identities whose materializer is gone, then re-dispatch every requested warm that
    no live warmer works on. Returns the counts."""
    now = now or timezone.now()
    recovered = identities_warming_recover(now=now)
    from mobs_app.tasks import mob_warm_task

    dispatched = 0
    pending = Mob.objects.filter(warm_requested_at__isnull=False).order_by("warm_requested_at")
    for mob_pk, concurrency in pending.values_list("pk", "warm_concurrency")[:SWEEP_BATCH]:
        if _warmer_alive(mob_pk, now):
            continue
        dispatch(mob_warm_task, mob_pk=mob_pk, concurrency=max(1, concurrency or 1))
        dispatched += 1
    return {"recovered": recovered, "dispatched": dispatched}
