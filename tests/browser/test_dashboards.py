"""The dashboards in headless Chromium: pages load their state, then follow the stream."""

import pytest

from lashops.ops.selectors import model_or_none
from tests.live.server import http_json
from tests.support.browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def run_sync(fn) -> None:
    """Run ORM code from a test that drives the browser: Playwright's sync API keeps an event loop
    running in this thread, and Django refuses ORM calls from such a thread."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def call() -> None:
        try:
            fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(call).result(timeout=30)


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


def test_fleet_burn_range_switches_and_stays_in_the_url(page, server, api_key):
    from datetime import timedelta

    from django.utils import timezone

    from sessions_app.models import Session, Turn, UsageRecord

    def usage() -> None:  # one model call three days ago: only the 7d range shows it
        session = Session.objects.get(pk="burn-1")
        turn = Turn.objects.create(id="burn-t1", session=session, index=1, input_text="hi")
        row = UsageRecord.objects.create(
            session=session, turn=turn, provider="scripted", model="m1", input_tokens=40, output_tokens=2
        )
        UsageRecord.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(days=3))

    status, _ = http_json(
        "POST", f"{server.url}/api/sessions", {"id": "burn-1", "model": SCRIPT}, {"Authorization": f"Bearer {api_key}"}
    )
    assert status in (200, 201)
    run_sync(usage)
    page.reload()
    page.wait_for_selector("#stream-status.ok")
    assert page.inner_text("#burn-tokens") == "no data yet"
    assert page.input_value("#burn-range") == "1h"
    assert page.inner_text("#burn-bucket") == "(per 1 min)"
    with page.expect_response(lambda r: "fleet.json" in r.url and "range=24h" in r.url) as answer:
        page.select_option("#burn-range", "24h")
    assert answer.value.status == 200 and answer.value.json()["burn_range"]["bucket_seconds"] == 900
    page.wait_for_function("() => document.querySelector('#burn-bucket').innerText === '(per 15 min)'")
    assert "range=24h" in page.url
    page.select_option("#burn-range", "7d")
    page.wait_for_function("() => document.querySelector('#burn-bucket').innerText === '(per 1 h)'")
    page.wait_for_selector("#burn-tokens svg circle")  # one point, placed within the 7 day axis
    assert "scripted:m1" in page.inner_text("#burn-tokens .legend")
    page.reload()
    page.wait_for_selector("#stream-status.ok")
    assert page.input_value("#burn-range") == "7d"  # the range survives a reload
    shot(page, "fleet-burn-7d")


def test_a_worker_going_stale_and_recovering_updates_the_workers_table_live(page, server, api_key):
    """The server's in-process scheduler runs the worker sweep; the beats come from this process."""
    from datetime import timedelta

    from django.utils import timezone

    from lashops.core.models import WorkerHeartbeat
    from lashops.core.services import worker_beat

    def beat() -> None:
        worker_beat(
            worker_id="celery:gone:4242",
            kind="celery",
            host="gone",
            pid=4242,
            holder_prefix="gone:4242:",
            queues=["lashops"],
            started_at=timezone.now(),
            in_flight=[{"task": "lashops.processes.drive", "process_id": "p1"}],
            completed=0,
        )

    page.wait_for_selector("#stream-status.ok")
    # Under `python -m daphne` the scheduler starts with the first in-process dispatch: make one.
    status, _ = http_json("POST", f"{server.url}/api/runner/probe", None, {"Authorization": f"Bearer {api_key}"})
    assert status == 202
    run_sync(beat)
    run_sync(
        lambda: WorkerHeartbeat.objects.filter(worker_id="celery:gone:4242").update(
            last_beat_at=timezone.now() - timedelta(minutes=5)
        )
    )
    row = "[data-worker='celery:gone:4242']"
    feed_has = "(t) => document.querySelector('#events').textContent.includes(t)"
    page.wait_for_function(feed_has, arg="worker.stale  worker=celery:gone:4242", timeout=20_000)
    # Stale with no work at risk: out of the default view, counted as hidden, listed on demand.
    page.wait_for_selector(row, state="detached")
    page.wait_for_function("() => document.querySelector('#workers-hidden').textContent.includes('hidden')")
    page.check("#all-workers")
    page.wait_for_selector(f"{row}[data-health='stale'] td.health-stale")
    assert page.inner_text(f"{row} td:nth-child(7)") != ""  # when it was reported
    assert page.inner_text(f"{row} td:nth-child(11)") == ""  # no lease of its was held
    shot(page, "fleet-worker-stale")
    run_sync(beat)
    # This process plays the worker, and its in-memory channel layer is not the server's: the
    # server's next event (a probe) has the fleet socket fill the hole from the database.
    http_json("POST", f"{server.url}/api/runner/probe", None, {"Authorization": f"Bearer {api_key}"})
    page.wait_for_function(feed_has, arg="worker.recovered  worker=celery:gone:4242", timeout=20_000)
    page.wait_for_selector(f"{row}[data-health='healthy']")
    assert page.inner_text(f"{row} td:nth-child(7)") == ""
