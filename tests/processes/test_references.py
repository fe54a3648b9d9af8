"""A process or a subscription may only name sessions of its own workspace: another workspace's
session answers 404 naming the field, exactly like a session that does not exist."""

from __future__ import annotations

import pytest

from lashops.core.errors import NotFound
from processes_app.models import Process, TriggerSubscription
from processes_app.services import process_grant, process_start
from sessions_app.services import session_open

pytestmark = pytest.mark.django_db

SCRIPTED = {"provider": "scripted", "model": "scripted", "parameters": {"script": []}}


@pytest.fixture
def sessions(workspace, other_workspace):
    session_open(workspace=workspace, session_id="mine", model=SCRIPTED)
    session_open(workspace=other_workspace, session_id="theirs", model=SCRIPTED)


def _start(api, **fields):
    body = {"definition": "test.one_step", "disposition": "rerunnable", **fields}
    return api.post("/api/processes", body, content_type="application/json")


def _error(response, path: str) -> dict:
    assert response.status_code == 404, response.content
    error = response.json()["error"]
    assert error["code"] == "session_not_found"
    assert [d["path"] for d in error["details"]] == [path]
    return error


def test_a_process_naming_another_workspaces_session_to_wake_is_not_found(api, sessions):
    response = _start(api, id="p-wake", wake_session="theirs")
    _error(response, "body.wake_session")
    assert not Process.objects.filter(pk="p-wake").exists()


def test_a_process_granting_another_workspaces_session_is_not_found(api, sessions):
    response = _start(api, id="p-grant", grant_sessions=["mine", "theirs"])
    _error(response, "body.grant_sessions.1")
    assert not Process.objects.filter(pk="p-grant").exists()


def test_an_unknown_session_answers_like_another_workspaces_one(api, sessions):
    theirs = _error(_start(api, id="p-1", wake_session="theirs"), "body.wake_session")
    unknown = _error(_start(api, id="p-2", wake_session="nobody"), "body.wake_session")
    assert theirs["message"].replace("theirs", "X") == unknown["message"].replace("nobody", "X")


def test_a_process_naming_its_own_workspaces_sessions_is_created(api, sessions):
    response = _start(api, id="p-ok", wake_session="mine", grant_sessions=["mine"])
    assert response.status_code == 201, response.content
    assert Process.objects.get(pk="p-ok").wake_session_id == "mine"


def test_a_batch_naming_another_workspaces_session_starts_nothing(api, sessions):
    body = {
        "processes": [
            {"id": "b-0", "definition": "test.one_step", "disposition": "rerunnable", "wake_session": "mine"},
            {"id": "b-1", "definition": "test.one_step", "disposition": "rerunnable", "grant_sessions": ["theirs"]},
        ]
    }
    response = api.post("/api/processes/batch", body, content_type="application/json")
    _error(response, "body.processes.1.grant_sessions.0")
    assert not Process.objects.filter(pk__in=["b-0", "b-1"]).exists()


def test_a_subscription_waking_another_workspaces_session_is_not_found(api, sessions):
    api.post("/api/triggers/events", {"name": "deploy"}, content_type="application/json")
    body = {"event": "deploy", "definition": "test.one_step", "wake_session": "theirs"}
    response = api.post("/api/triggers/subscriptions", body, content_type="application/json")
    _error(response, "body.wake_session")
    assert not TriggerSubscription.objects.exists()
    body["wake_session"] = "mine"
    response = api.post("/api/triggers/subscriptions", body, content_type="application/json")
    assert response.status_code == 201, response.content


def test_granting_another_workspaces_session_to_a_process_is_not_found(workspace, sessions):
    process_start(workspace=workspace, process_id="g", definition="test.one_step", disposition="rerunnable")
    with pytest.raises(NotFound) as raised:
        process_grant(workspace=workspace, process_id="g", session_id="theirs")
    assert raised.value.details[0]["path"] == "session_id"
    assert not Process.objects.get(pk="g").grants.exists()
