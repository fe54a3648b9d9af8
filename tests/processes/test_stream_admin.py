"""/ws/processes/ replay and the admin pages and actions."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from lashops.asgi import application
from processes_app.models import Process


@pytest.mark.django_db(transaction=True)
async def test_process_socket_replays_process_events_only(api_key, workspace):
    from lashops.core.events import publish
    from processes_app.services import process_start

    await database_sync_to_async(publish)(workspace=workspace, type="other.thing", subject={"x": 1})
    await database_sync_to_async(process_start)(
        workspace=workspace,
        process_id="ws1",
        definition="test.one_step",
        disposition="externally_owned",
        kind="external",
    )
    comm = WebsocketCommunicator(
        application, "/ws/processes/?after=0", headers=[(b"authorization", f"Bearer {api_key}".encode())]
    )
    assert (await comm.connect())[0]
    first = await comm.receive_json_from(timeout=3)
    assert first["type"] == "process.created" and first["subject"] == {"process": "ws1"}
    assert (await comm.receive_json_from(timeout=3))["type"] == "stream.ready"
    await comm.disconnect()


@pytest.mark.django_db
def test_admin_lists_filters_shows_and_acts_on_processes(admin_client, workspace, drive):
    from processes_app.services import process_start

    process_start(workspace=workspace, process_id="adm", definition="test.signals", disposition="rerunnable")
    drive()
    assert (
        admin_client.get("/admin/processes_app/process/?status__exact=running&kind__exact=definition").status_code
        == 200
    )
    page = admin_client.get("/admin/processes_app/process/adm/change/")
    assert page.status_code == 200 and b"process.waiting" in page.content
    form = admin_client.post(
        "/admin/processes_app/process/", {"action": "signal_processes", "_selected_action": ["adm"]}
    )
    assert form.status_code == 200 and b"Send signal" in form.content
    sent = admin_client.post(
        "/admin/processes_app/process/",
        {"action": "signal_processes", "_selected_action": ["adm"], "apply": "1", "name": "go", "payload": '{"n": 1}'},
        follow=True,
    )
    assert b"Sent" in sent.content
    drive()
    assert Process.objects.get(pk="adm").status == "completed"
    for path in ("triggerevent", "triggersubscription", "triggeroccurrence", "cronschedule"):
        assert admin_client.get(f"/admin/processes_app/{path}/").status_code == 200


@pytest.mark.django_db
def test_admin_cancel_action_cancels(admin_client, workspace, drive):
    from processes_app.services import process_start

    process_start(workspace=workspace, process_id="adm2", definition="test.sleeper", disposition="rerunnable")
    drive()
    admin_client.post("/admin/processes_app/process/", {"action": "cancel_processes", "_selected_action": ["adm2"]})
    assert Process.objects.get(pk="adm2").status == "cancelled"
