"""Headless Chromium against a real ASGI server (uvicorn, as in production; tests/live/server.py). Screenshots go to
test-artifacts/ (gitignored)."""

from __future__ import annotations

import os

import pytest

from tests.live.server import AsgiServer
from tests.support.browser import CHROMIUM, watch_js_errors
from tests.support.services import service_missing


@pytest.fixture
def server(transactional_db, tmp_path):
    if not os.path.exists(CHROMIUM):
        service_missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    srv = AsgiServer(log_path=tmp_path / "server.log").start()
    yield srv
    srv.stop()


@pytest.fixture
def staff_user(transactional_db, workspace, django_user_model):
    # Before the browser starts: Playwright's sync API runs an event loop in this thread,
    # and Django refuses ORM calls from a thread with a running loop.
    return django_user_model.objects.create_superuser("ops", "ops@example.com", "ops-pass-123")


@pytest.fixture
def browser(server, staff_user, api_key):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(f"{server.url}/admin/login/?next=/ops/")
    pg.fill("#id_username", "ops")
    pg.fill("#id_password", "ops-pass-123")
    pg.click("input[type=submit]")
    pg.wait_for_url(f"{server.url}/ops/")
    pg.js_errors = watch_js_errors(pg)  # from the dashboards on (the admin login asks for a favicon)
    yield pg
    context.close()
    assert pg.js_errors == [], "JavaScript errors on the dashboards"
