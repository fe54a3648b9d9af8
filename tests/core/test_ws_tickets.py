"""WebSocket authentication without a key in URLs (issue 10, item 7).

``POST /api/ws-tickets`` issues a short-lived single-use ticket (``?ticket=``); the key may
also travel in ``Sec-WebSocket-Protocol`` (``lashops.bearer, <key>``); ``?token=`` still works
and the server's logs never show it. The log test runs a real uvicorn with its access log on.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from lashops.asgi import application
from lashops.core.errors import TicketRefused
from lashops.core.models import ApiKey, WsTicket
from lashops.core.services import api_key_create, api_key_revoke, ws_ticket_issue, ws_ticket_redeem
from tests.live.server import AsgiServer, http_json

pytestmark = pytest.mark.django_db(transaction=True)


def _ticket(api) -> str:
    response = api.post("/api/ws-tickets")
    assert response.status_code == 201, response.content
    return response.json()["ticket"]


async def _opens(path: str, **kwargs) -> tuple[bool, object]:
    comm = WebsocketCommunicator(application, path, **kwargs)
    connected, subprotocol = await comm.connect(timeout=5)
    if connected:
        ready = await comm.receive_json_from(timeout=5)
        assert ready["type"] == "stream.ready"
        await comm.disconnect()
    return connected, subprotocol


# --- the endpoint ------------------------------------------------------------------------


def test_post_ws_tickets_issues_a_short_lived_ticket_bound_to_the_workspace_and_key(api, workspace):
    response = api.post("/api/ws-tickets")
    assert response.status_code == 201
    body = response.json()
    assert body["ticket"].startswith("wst_") and body["workspace"] == workspace.slug
    assert body["expires_in"] == 60.0
    stored = WsTicket.objects.get()
    assert (stored.workspace, stored.api_key, stored.user) == (workspace, ApiKey.objects.get(), None)
    assert body["ticket"] not in stored.digest  # only a hash is kept


def test_post_ws_tickets_needs_credentials(client, workspace):
    response = client.post("/api/ws-tickets")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_logged_in_member_gets_a_ticket_bound_to_them(client, workspace, django_user_model):
    user = django_user_model.objects.create_user("member", password=None)
    workspace.members.add(user)
    client.force_login(user)
    response = client.post("/api/ws-tickets")
    assert response.status_code == 201
    assert WsTicket.objects.get().user == user


# --- redeeming -----------------------------------------------------------------------------


async def test_a_ticket_opens_one_socket_and_is_refused_the_second_time(api, workspace):
    ticket = await _sync(_ticket)(api)
    assert (await _opens(f"/ws/fleet/?after=0&ticket={ticket}"))[0]
    assert not (await _opens(f"/ws/fleet/?after=0&ticket={ticket}"))[0]


def test_redeeming_says_why_a_ticket_is_refused(workspace, api_key):
    issued = ws_ticket_issue(workspace=workspace)
    assert ws_ticket_redeem(plaintext=issued.plaintext).workspace == workspace
    with pytest.raises(TicketRefused) as used:
        ws_ticket_redeem(plaintext=issued.plaintext)
    assert used.value.code == "ticket_used"

    expired = ws_ticket_issue(workspace=workspace)
    WsTicket.objects.filter(pk=expired.ticket.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(TicketRefused) as late:
        ws_ticket_redeem(plaintext=expired.plaintext)
    assert late.value.code == "ticket_expired"

    with pytest.raises(TicketRefused) as unknown:
        ws_ticket_redeem(plaintext="wst_nope")
    assert unknown.value.code == "ticket_invalid"

    key = ApiKey.objects.get()
    of_revoked = ws_ticket_issue(workspace=workspace, api_key=key)
    api_key_revoke(api_key=key)
    with pytest.raises(TicketRefused) as revoked:
        ws_ticket_redeem(plaintext=of_revoked.plaintext)
    assert revoked.value.code == "ticket_revoked"


async def test_an_expired_ticket_opens_nothing(workspace):
    issued = await _sync(ws_ticket_issue)(workspace=workspace)
    await _sync(WsTicket.objects.filter(pk=issued.ticket.pk).update)(expires_at=timezone.now() - timedelta(seconds=1))
    assert not (await _opens(f"/ws/fleet/?ticket={issued.plaintext}"))[0]


async def test_a_ticket_of_one_workspace_cannot_open_anothers_session_stream(workspace, other_workspace):
    from sessions_app.services import session_open
    from tests.support.scripted import ANSWER, scripted

    theirs, _ = await _sync(session_open)(workspace=other_workspace, session_id="theirs", model=scripted(ANSWER))
    mine = await _sync(ws_ticket_issue)(workspace=workspace)
    assert not (await _opens(f"/ws/sessions/{theirs.pk}/?ticket={mine.plaintext}"))[0]
    again = await _sync(ws_ticket_issue)(workspace=other_workspace)
    assert (await _opens(f"/ws/sessions/{theirs.pk}/?ticket={again.plaintext}"))[0]


def test_concurrent_handshakes_with_one_ticket_let_exactly_one_in(workspace):
    from django.db import connection

    issued = ws_ticket_issue(workspace=workspace)
    results: list[str] = []
    start = threading.Barrier(8)

    def redeem() -> None:
        start.wait()
        try:
            ws_ticket_redeem(plaintext=issued.plaintext)
            results.append("in")
        except TicketRefused as exc:
            results.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["in"] + ["ticket_used"] * 7


async def test_the_key_in_the_websocket_subprotocol_opens_the_socket_and_is_not_echoed(workspace, api_key):
    connected, subprotocol = await _opens("/ws/fleet/?after=0", subprotocols=["lashops.bearer", api_key])
    assert connected and subprotocol == "lashops.bearer"
    refused, _ = await _opens("/ws/fleet/", subprotocols=["lashops.bearer", "lsk_bogus_bogus"])
    assert not refused


def _sync(fn):
    from asgiref.sync import sync_to_async

    return sync_to_async(fn, thread_sensitive=True)


# --- a real uvicorn with its access log on ------------------------------------------------


class LoggingServer(AsgiServer):
    """The production command with uvicorn's access log on (tests/live/server.py turns it off)."""

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--no-access-log"] + ["--log-level", "info"]


@pytest.fixture
def server(tmp_path, workspace):
    server = LoggingServer(log_path=tmp_path / "uvicorn.log").start()
    yield server
    server.stop()


def _secret(api_key: str) -> str:
    return api_key.rsplit("_", 1)[-1]


def _refusal(url: str, **kwargs) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10, **kwargs)
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


def _ready(ws) -> dict:
    message = json.loads(ws.recv(timeout=10))
    assert message["type"] == "stream.ready", message
    return message


def test_uvicorns_logs_never_show_a_key_or_a_ticket(server, workspace, api_key):
    base = f"ws://127.0.0.1:{server.port}"
    with connect(f"{base}/ws/fleet/?after=0&token={api_key}", open_timeout=10) as ws:  # the compatibility path
        _ready(ws)
    status, _ = http_json("GET", f"{server.url}/api/health?token={api_key}")
    assert status in (200, 503)
    status, body = http_json("POST", f"{server.url}/api/ws-tickets", headers={"Authorization": f"Bearer {api_key}"})
    assert status == 201
    with connect(f"{base}/ws/fleet/?after=0&ticket={body['ticket']}", open_timeout=10) as ws:
        _ready(ws)
    _refusal(f"{base}/ws/fleet/?token=lsk_not_{_secret(api_key)}x")
    server.stop()  # flushes the log
    log = server.log_path.read_text()
    assert '"WebSocket /ws/fleet/?after=0&token=[redacted]" [accepted]' in log  # the line is there...
    assert "GET /api/health?token=[redacted] HTTP/1.1" in log
    assert "ticket=[redacted]" in log
    assert _secret(api_key) not in log  # ...without the key
    assert body["ticket"].split("_", 1)[1] not in log


def test_a_ticket_works_once_over_uvicorn_and_the_refusals_say_why(server, workspace, other_workspace, api_key):
    from sessions_app.services import session_open
    from tests.support.scripted import ANSWER, scripted

    base = f"ws://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {api_key}"}
    ticket = http_json("POST", f"{server.url}/api/ws-tickets", headers=headers)[1]["ticket"]
    with connect(f"{base}/ws/fleet/?after=0&ticket={ticket}", open_timeout=10) as ws:
        _ready(ws)
    status, body = _refusal(f"{base}/ws/fleet/?after=0&ticket={ticket}")
    assert (status, body["error"]["code"]) == (401, "ticket_used")
    assert "already used" in body["error"]["message"]

    late = http_json("POST", f"{server.url}/api/ws-tickets", headers=headers)[1]["ticket"]
    WsTicket.objects.filter(used_at__isnull=True).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _refusal(f"{base}/ws/fleet/?ticket={late}")[1]["error"]["code"] == "ticket_expired"

    assert _refusal(f"{base}/ws/fleet/")[1]["error"]["code"] == "unauthorized"

    theirs, _ = session_open(workspace=other_workspace, session_id="theirs", model=scripted(ANSWER))
    mine = http_json("POST", f"{server.url}/api/ws-tickets", headers=headers)[1]["ticket"]
    assert _refusal(f"{base}/ws/sessions/{theirs.pk}/?ticket={mine}")[0] == 403  # A's ticket, B's stream

    key_b = api_key_create(workspace=other_workspace, name="b").plaintext
    with connect(f"{base}/ws/sessions/{theirs.pk}/", subprotocols=["lashops.bearer", key_b], open_timeout=10) as ws:
        assert ws.subprotocol == "lashops.bearer"
        _ready(ws)
