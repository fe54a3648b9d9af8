"""Background work for mobs. Thin and idempotent: each task re-checks state in its service."""

from __future__ import annotations

from lashops.celery import task


@task(name="lashops.mobs.frame_deliver", formerly="mobs_app.frame_deliver")
def frame_deliver_task(*, frame_pk: int, attempts: int | None = None) -> None:
    from mobs_app.delivery import frame_deliver

    frame_deliver(frame_pk=frame_pk, attempts=attempts)


@task(name="lashops.mobs.console_deliveries_sweep", formerly="mobs_app.console_deliveries_sweep")
def console_deliveries_sweep_task() -> dict[str, int]:
    from mobs_app.delivery import console_deliveries_sweep

    return console_deliveries_sweep()


@task(name="lashops.mobs.mob_warm", formerly="mobs_app.mob_warm")
def mob_warm_task(*, mob_pk: int, concurrency: int) -> None:
    from mobs_app.models import Mob
    from mobs_app.services import mob_warm

    mob = Mob.objects.select_related("workspace", "active_revision").filter(pk=mob_pk).first()
    if mob is not None:
        mob_warm(mob=mob, concurrency=concurrency)


@task(name="lashops.mobs.identity_warm", formerly="mobs_app.identity_warm")
def identity_warm_task(*, identity_pk: int) -> None:
    from mobs_app.models import Identity
    from mobs_app.services import identity_materialize

    identity = Identity.objects.select_related("mob__workspace", "mob__active_revision").filter(pk=identity_pk).first()
    if identity is not None and identity.state == Identity.State.DORMANT:
        try:
            identity_materialize(identity=identity)
        except Exception:  # the identity is marked broken with the reason; nothing to retry
            pass


@task(name="lashops.mobs.console_prune", formerly="mobs_app.console_prune")
def console_prune_task() -> int:
    from mobs_app.journal import console_frames_prune

    return console_frames_prune()


@task(name="lashops.mobs.warming_sweep", formerly="mobs_app.warming_sweep")
def warming_sweep_task() -> dict[str, int]:
    from mobs_app.warming import mob_warming_sweep

    return mob_warming_sweep()
