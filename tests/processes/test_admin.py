"""Trigger admin: events, subscriptions and schedules are saved through the trigger services,
whose refusals are form errors; a subscription's definition, event and wake session never change
after it is created."""

import pytest

from processes_app import triggers
from processes_app.models import CronSchedule, TriggerEvent, TriggerSubscription

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client


@pytest.fixture
def event(workspace):
    return triggers.trigger_event_declare(workspace=workspace, name="deploy")


def _subscription(workspace, event, **extra) -> dict:
    return {
        "workspace": workspace.pk,
        "event": event.pk,
        "name": "on-deploy",
        "definition_name": "test.one_step",
        "input_template": "",
        "disposition": "rerunnable",
        "wake_session_id": "",
        "enabled": "on",
        **extra,
    }


def test_a_subscription_is_created_through_trigger_subscribe(staff, workspace, event):
    response = staff.post("/admin/processes_app/triggersubscription/add/", _subscription(workspace, event))
    assert response.status_code == 302
    sub = TriggerSubscription.objects.get()
    assert sub.input_template == {"payload": "$payload"}  # the service's default template


def test_an_unknown_definition_or_anothers_session_is_a_form_error(staff, workspace, other_workspace, event):
    from sessions_app.services import session_open
    from tests.support.scripted import ANSWER, scripted

    theirs, _ = session_open(workspace=other_workspace, session_id="theirs", model=scripted(ANSWER))
    url = "/admin/processes_app/triggersubscription/add/"
    unknown = staff.post(url, _subscription(workspace, event, definition_name="nope"))
    assert unknown.status_code == 200 and "definition_name" in unknown.context["adminform"].form.errors
    foreign = staff.post(url, _subscription(workspace, event, wake_session_id=theirs.pk))
    assert foreign.status_code == 200 and "wake_session_id" in foreign.context["adminform"].form.errors
    assert not TriggerSubscription.objects.exists()


def test_a_subscriptions_definition_and_event_do_not_change(staff, workspace, event):
    sub = triggers.trigger_subscribe(workspace=workspace, event_name="deploy", definition="test.one_step")
    other = triggers.trigger_event_declare(workspace=workspace, name="other")
    response = staff.post(
        f"/admin/processes_app/triggersubscription/{sub.pk}/change/",
        _subscription(workspace, other, definition_name="test.other", name="renamed", enabled=""),
    )
    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.event_id, sub.definition_name, sub.name, sub.enabled) == (event.pk, "test.one_step", "renamed", False)


def test_a_schedule_is_saved_through_schedule_save_and_a_bad_cron_is_a_form_error(staff, workspace, event):
    url = "/admin/processes_app/cronschedule/add/"
    data = {"workspace": workspace.pk, "name": "hourly", "event": event.pk, "cron": "0 * * * *", "payload": "{}"}
    bad = staff.post(url, {**data, "cron": "61 * * * *"})
    assert bad.status_code == 200 and "cron" in bad.context["adminform"].form.errors
    assert staff.post(url, {**data, "enabled": "on"}).status_code == 302
    schedule = CronSchedule.objects.get()
    assert schedule.next_run_at is not None and schedule.next_run_at.minute == 0


def test_an_invalid_payload_schema_is_a_form_error(staff, workspace):
    url = "/admin/processes_app/triggerevent/add/"
    bad = staff.post(url, {"workspace": workspace.pk, "name": "x", "description": "", "payload_schema": '{"type": 3}'})
    assert bad.status_code == 200 and "payload_schema" in bad.context["adminform"].form.errors
    good = {"workspace": workspace.pk, "name": "x", "description": "d", "payload_schema": '{"type": "object"}'}
    assert staff.post(url, good).status_code == 302
    assert TriggerEvent.objects.get(name="x").payload_schema == {"type": "object"}
