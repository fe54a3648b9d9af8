"""Console delivery retries on the mob page in headless Chromium, against a server whose member
sessions fail their first four deliveries: two frames show their retry (attempt 1 of 2, when the
next attempt is due, the last error), then give up; a reload shows the same; "Retry now" delivers
one, and on the other (its member retired) the page shows the API's 409."""

import os

import pytest

from tests.live.server import AsgiServer, http_json
from tests.support.browser import CHROMIUM, shot
from tests.support.services import service_missing

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MOB_TOML = """
[mob]
id = "flaky-desk"
orchestrator = "dispatcher"

[profiles.dispatcher]
model = "scripted-1"
provider = "scripted"
peer_description = "Routes tickets"
[profiles.dispatcher.tools]
comms = true

[[roster]]
key = "dispatcher"
profile = "dispatcher"

[[roster]]
key = "billing"
profile = "dispatcher"
"""

FLAKY_ENV = {
    "LASHOPS_MOB_MEMBER_SESSIONS": "tests.browser.flaky_members:EnvFlakyMemberSessions",
    "LASHOPS_TEST_FAIL_DELIVERIES": "4",  # two frames x two attempts: both give up
    "LASHOPS_CONSOLE_DELIVERY_ATTEMPTS": "2",
    "LASHOPS_CONSOLE_RETRY_BASE_SECONDS": "2",
    "LASHOPS_CONSOLE_SWEEP_SECONDS": "0.5",
}


@pytest.fixture
def server(transactional_db, tmp_path):
    """This module's server: the conftest's, with flaky member sessions."""
    if not os.path.exists(CHROMIUM):
        service_missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    srv = AsgiServer(log_path=tmp_path / "server.log", extra_env=FLAKY_ENV).start()
    yield srv
    srv.stop()


def _frame(page, text: str) -> str:
    """The selector of the console item whose message is ``text``."""
    seq = page.wait_for_function(
        """(text) => {
            const li = [...document.querySelectorAll('#console li')].find(li => li.textContent.includes(text));
            return li && li.dataset.seq;
        }""",
        arg=text,
    ).json_value()
    return f"#console li[data-seq='{seq}']"


def test_console_shows_retries_gives_up_and_retry_now_delivers_or_reports_the_409(page, server, api_key):
    auth = {"Authorization": f"Bearer {api_key}"}
    status, body = http_json("POST", f"{server.url}/api/mobs", {"toml": MOB_TOML}, auth)
    assert status in (200, 201), body
    page.goto(f"{server.url}/ops/mobs/flaky-desk/")
    page.wait_for_selector("#stream-status.ok")

    for key, text in (("dispatcher", "first try fails"), ("billing", "billing too")):
        status, body = http_json(
            "POST", f"{server.url}/api/mobs/flaky-desk/identities/{key}/send", {"text": text}, auth
        )
        assert status == 202, body
    first, second = _frame(page, "first try fails"), _frame(page, "billing too")

    # Live, without a reload: the first attempt failed and the next one is due.
    page.wait_for_selector(f"{first}[data-delivery='waiting']")
    waiting = page.inner_text(f"{first} .delivery")
    assert "attempt 1 of 2 failed" in waiting and "next attempt at" in waiting
    assert "last error: RuntimeError: member session unavailable" in waiting
    assert page.is_visible(f"{first} button.retry")
    shot(page, "mob_console_retrying")

    # The second attempt fails too: the frames give up.
    page.wait_for_selector(f"{first}[data-delivery='failed']", timeout=20_000)
    page.wait_for_selector(f"{second}[data-delivery='failed']", timeout=20_000)
    assert "gave up after 2 of 2 attempts" in page.inner_text(f"{first} .delivery")

    # A reload reads the same state from the server.
    page.reload()
    page.wait_for_selector("#stream-status.ok")
    failed = page.inner_text(f"{first} .delivery")
    assert "gave up after 2 of 2 attempts" in failed and "member session unavailable" in failed
    assert page.get_attribute(first, "data-status") == "delivery_failed"

    # Retry now, refused: the member was retired meanwhile (409 identity_retired).
    status, body = http_json("POST", f"{server.url}/api/mobs/flaky-desk/identities/billing/retire", None, auth)
    assert status == 200, body
    page.click(f"{second} button.retry")
    page.wait_for_selector(f"{second} .retry-result.bad")
    refused = page.inner_text(f"{second} .retry-result")
    assert refused.startswith("Retry refused (identity_retired)"), refused
    # Chromium logs the refused request; it is the expected answer, not a script error.
    expected = [e for e in page.js_errors if "status of 409 (Conflict)" in e]
    assert len(expected) == 1, page.js_errors
    page.js_errors.remove(expected[0])

    # Retry now, delivered: the member sessions are back.
    page.click(f"{first} button.retry")
    page.wait_for_selector(f"{first}[data-delivery='delivered']", timeout=20_000)
    assert page.get_attribute(first, "data-status") == "delivered"
    assert "earlier error: RuntimeError" in page.inner_text(f"{first} .delivery")
    assert page.query_selector(f"{first} button.retry") is None
    assert page.get_attribute(second, "data-delivery") == "failed"
    page.wait_for_function(
        "() => document.querySelector(\"#roster [data-identity='billing']\").textContent.endsWith('retired')"
    )
    shot(page, "mob_console_retried")
