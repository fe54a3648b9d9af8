"""The mob page in headless Chromium: a mob loaded over the API, a message sent from the page's
box, the member's scripted reply appearing on the console timeline; every /ops/ page renders
without a JavaScript error."""

import pytest

from tests.live.server import http_json
from tests.support.browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MOB_TOML = """
[mob]
id = "browser-desk"
orchestrator = "dispatcher"

[profiles.dispatcher]
model = "scripted-1"
provider = "scripted"
peer_description = "Routes tickets"
[profiles.dispatcher.tools]
comms = true

[profiles.specialist]
model = "scripted-1"
provider = "scripted"
peer_description = "Answers one area"
[profiles.specialist.tools]
comms = true

[wiring]
auto_wire_orchestrator = true

[[roster]]
key = "dispatcher"
profile = "dispatcher"

[[roster]]
key = "billing"
profile = "specialist"
labels = { team = "money" }
"""


def _load_mob(server, api_key) -> None:
    status, body = http_json(
        "POST", f"{server.url}/api/mobs", {"toml": MOB_TOML}, {"Authorization": f"Bearer {api_key}"}
    )
    assert status in (200, 201), body


def test_a_message_sent_from_the_mob_page_gets_its_scripted_reply_on_the_console(page, server, api_key):
    _load_mob(server, api_key)
    page.goto(f"{server.url}/ops/mobs/browser-desk/")
    page.wait_for_selector("#stream-status.ok")
    page.wait_for_selector("#roster [data-identity='dispatcher']")
    page.select_option("#send-to", "dispatcher")
    page.fill("#send-text", "Hello from the dashboard")
    page.click("#send button")
    page.wait_for_function("() => document.querySelector('#send-result').textContent === 'accepted'")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#console li')].some(li => li.textContent.includes('Hello from the dashboard'))"
    )
    page.wait_for_selector("#console li[data-kind='reply']", timeout=30_000)
    reply = page.inner_text("#console li[data-kind='reply']")
    assert "[dispatcher] reply completed" in reply
    page.wait_for_function(
        "() => [...document.querySelectorAll('#console li')].some(li => li.textContent.includes('send completed'))"
    )
    # The console applies its frames as they arrive; the roster follows on the page's next state read.
    page.wait_for_function(
        "() => document.querySelector(\"#roster [data-identity='dispatcher']\").textContent.endsWith('active')"
    )
    shot(page, "mob")


def test_every_ops_page_renders_without_javascript_errors(page, server, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    _load_mob(server, api_key)
    assert http_json("POST", f"{server.url}/api/sessions", {"id": "pages-1"}, auth)[0] in (200, 201)
    body = {"id": "pages-p1", "definition": "demo.approval", "input": {"sleep": 0}}
    process_status = http_json("POST", f"{server.url}/api/processes", body, auth)[0]
    paths = ["/ops/", "/ops/processes/", "/ops/sessions/pages-1/", "/ops/mobs/browser-desk/"]
    if process_status in (200, 201):
        paths.append("/ops/processes/pages-p1/")
    for path in paths:
        page.goto(f"{server.url}{path}")
        page.wait_for_selector("#stream-status.ok")
        page.wait_for_timeout(300)  # let the first snapshot render and the stream settle
        assert page.js_errors == [], path
