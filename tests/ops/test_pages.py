"""/ops/ pages and the admin's live panels render their state and the cursor to follow from."""

import json

import pytest

from lashops.core.events import publish
from sessions_app.services import session_open


@pytest.fixture
def staff(client, django_user_model, workspace):
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client.force_login(user)
    return client


def _snapshot(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="snapshot" type="application/json">') + len(
        '<script id="snapshot" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_ops_needs_a_staff_login(client, workspace):
    response = client.get("/ops/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_fleet_page_carries_counts_workers_and_the_stream_cursor(staff, workspace):
    session_open(workspace=workspace, session_id="s1", model={"provider": "scripted", "model": "scripted-1"})
    event = publish(workspace=workspace, type="x.happened")
    response = staff.get("/ops/")
    assert response.status_code == 200
    snapshot = _snapshot(response)
    assert snapshot["cursor"] == event.cursor
    assert snapshot["counts"]["active_sessions"] == 1
    assert b"/static/ops/ops.js" in response.content  # vendored, no CDN


def test_session_page_and_unknown_session(staff, workspace):
    session_open(workspace=workspace, session_id="s1", model={"provider": "scripted", "model": "scripted-1"})
    assert _snapshot(staff.get("/ops/sessions/s1/"))["session"]["id"] == "s1"
    assert staff.get("/ops/sessions/nope/").status_code == 404


def test_admin_index_shows_fleet_counts_and_session_change_page_has_a_live_panel(staff, workspace):
    session_open(workspace=workspace, session_id="s1", model={"provider": "scripted", "model": "scripted-1"})
    assert b'id="fleet-counts"' in staff.get("/admin/").content
    from django.template import engines

    from sessions_app.models import Session

    template = engines["django"].from_string("{% load lashops_ops %}{% live_panel obj %}")
    page = template.render({"obj": Session.objects.get(pk="s1")})
    assert 'id="live-panel"' in page and "/ws/sessions/s1/" in page
