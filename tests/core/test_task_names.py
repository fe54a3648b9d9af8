"""Celery task names follow one scheme, and the names tasks had before it still run."""

import re

from lashops import celery_app

# old name -> new name; the old ones are registered for one release so that messages queued
# before an upgrade are consumed (issue 11, item 6).
RENAMED = {
    "lashops.sessions.drive_turn": "lashops.sessions.turn_drive",
    "mobs_app.frame_deliver": "lashops.mobs.frame_deliver",
    "mobs_app.console_deliveries_sweep": "lashops.mobs.console_deliveries_sweep",
    "mobs_app.mob_warm": "lashops.mobs.mob_warm",
    "mobs_app.identity_warm": "lashops.mobs.identity_warm",
    "mobs_app.console_prune": "lashops.mobs.console_prune",
    "mobs_app.warming_sweep": "lashops.mobs.warming_sweep",
}
SCHEME = re.compile(r"lashops\.(core|sessions|processes|mobs)\.[a-z]+(_[a-z]+)*")


def _ours() -> set[str]:
    celery_app.loader.import_default_modules()
    # celery.* are Celery's own; tests.* are defined by tests
    return {name for name in celery_app.tasks if not name.startswith(("celery.", "tests."))}


def test_every_task_is_named_lashops_area_noun_verb():
    current = _ours() - set(RENAMED)
    assert len(current) == 15
    assert [name for name in sorted(current) if not SCHEME.fullmatch(name)] == []


def test_a_message_queued_under_an_old_name_runs_the_renamed_task():
    tasks = celery_app.tasks
    for old, new in RENAMED.items():
        assert old in _ours() and new in _ours()
        assert tasks[old].run is tasks[new].run, old


def test_the_beat_schedule_runs_exactly_the_periodic_tasks(settings):
    from lashops.core.scheduler import _entries

    periodic = {
        name for name in _ours() - set(RENAMED) if name.rsplit(".", 1)[-1].rsplit("_", 1)[-1] in {"sweep", "prune"}
    }
    scheduled = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    assert sorted(scheduled) == sorted(periodic) and len(periodic) == 9
    # the in-process scheduler runs the same entries as beat
    assert [(name, task) for name, task, _ in _entries()] == [
        (name, entry["task"]) for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    ]
