"""The dashboards in headless Chromium: pages load their state, then follow the stream."""

import pytest

from lashops.ops.selectors import model_or_none
from tests.browser.conftest import shot
from tests.live.server import http_json

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCRIPT = {
    "provider": "scripted",
    "model": "scripted-1",
    "parameters": {"script": [{"delay": 1.5, "text": "Streaming into the dashboard: forty-two.", "chunk_size": 4}]},
}


def test_fleet_page_and_a_turns_text_streaming_onto_the_session_page(page, server, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    page.wait_for_selector("#stream-status.ok")
    shot(page, "fleet")
    status, _ = http_json("POST", f"{server.url}/api/sessions", {"id": "live-1", "model": SCRIPT}, auth)
    assert status in (200, 201)
    page.goto(f"{server.url}/ops/sessions/live-1/")
    page.wait_for_selector("#stream-status.ok")
    status, _ = http_json(
        "POST", f"{server.url}/api/sessions/live-1/turns", {"input": "hello", "background": True}, auth
    )
    assert status in (200, 202)
    page.wait_for_function(
        "() => document.body.innerText.includes('Streaming into the dashboard: forty-two.')", timeout=20_000
    )
    page.wait_for_selector(".turn .status-committed")
    shot(page, "session")
    page.goto(f"{server.url}/ops/")
    page.wait_for_selector("[data-count='turns last minute'] b")
    assert page.inner_text("[data-count='active sessions'] b") == "1"


def test_a_process_changes_state_on_the_processes_page_and_its_admin_page(page, server, api_key):
    if model_or_none("processes_app", "Process") is None:
        pytest.skip("processes_app has no Process model in this tree")
    auth = {"Authorization": f"Bearer {api_key}"}
    body = {"id": "approve-1", "definition": "demo.approval", "input": {"sleep": 0}, "disposition": "rerunnable"}
    status, _ = http_json("POST", f"{server.url}/api/processes", body, auth)
    assert status in (200, 201), _
    process_id = "approve-1"
    page.goto(f"{server.url}/ops/processes/")
    page.wait_for_selector(f"[data-process='{process_id}']")
    page.wait_for_selector("#stream-status.ok")
    admin = page.context.new_page()
    admin.goto(f"{server.url}/admin/processes_app/process/{process_id}/change/")
    admin.wait_for_selector("#live-panel #stream-status.ok")
    admin.wait_for_function("() => document.querySelector('#live-state').innerText.startsWith('running')")
    page.wait_for_function(
        f"() => (document.querySelector(\"[data-process='{process_id}']\") || {{innerText: ''}}).innerText.includes('approve')",
        timeout=20_000,
    )
    signal = {"name": "approve", "payload": {"approved": True, "by": "browser"}}
    status, _ = http_json("POST", f"{server.url}/api/processes/{process_id}/signal", signal, auth)
    assert status == 202, _
    page.wait_for_selector(f"[data-process='{process_id}'] .status-completed", timeout=30_000)
    admin.wait_for_function("() => document.querySelector('#live-state').innerText.startsWith('completed')")
    shot(page, "processes")
    shot(admin, "process-admin")
