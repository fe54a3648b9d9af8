"""The in-process scheduler runs CELERY_BEAT_SCHEDULE: one schedule, two drivers."""

import pytest

from lashops.core.scheduler import _entries, run_due

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_beat_entry_is_runnable_in_process():
    names = {task for _, task, _ in _entries()}
    assert {"lashops.core.events_prune", "lashops.sessions.turns_sweep", "lashops.processes.sweep"} <= names


def test_due_entries_run_and_are_rescheduled(workspace):
    next_due = {}
    assert run_due(next_due, now=0.0) == []  # first sight: scheduled one interval ahead
    ran = run_due(next_due, now=10_000.0)
    assert "lashops-turns-sweep" in ran and "lashops-events-prune" in ran
    assert next_due["lashops-turns-sweep"] == 10_000.0 + 10.0


def test_turn_sweep_redrives_a_stranded_turn(workspace, settings):
    from django.db import transaction

    from sessions_app import services
    from sessions_app.models import Turn
    from tests.support.polling import wait_until
    from tests.support.scripted import scripted

    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    session, _ = services.session_open(workspace=workspace, session_id="lost", model=scripted({"text": "back"}))
    with transaction.atomic():  # admitted, but its dispatch never happened (a lost message)
        turn = services._admit(session, text="hello?", source_key="", background=True)
    assert services.turns_sweep() == [turn.pk]
    assert wait_until(lambda: Turn.objects.get(pk=turn.pk).status == "committed")
    assert Turn.objects.get(pk=turn.pk).final_text == "back"
