import pytest

from tests.support.mobs import MOB_TOML

pytestmark = pytest.mark.django_db


def _post(api, path, body):
    return api.post(path, data=body, content_type="application/json")


def test_load_list_detail_and_a_422_with_every_problem(api):
    created = _post(api, "/api/mobs", {"toml": MOB_TOML})
    assert created.status_code == 201, created.content
    assert created.json()["revision"] == 1 and created.json()["orchestrator"] == "lead"
    assert _post(api, "/api/mobs", {"toml": MOB_TOML}).status_code == 200
    assert [m["mob_id"] for m in api.get("/api/mobs").json()["items"]] == ["desk"]
    bad = _post(api, "/api/mobs", {"toml": MOB_TOML + "\n[flows.x]\n[limits]\nmax_sessions = 0\n"})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_definition"
    assert {d["path"] for d in error["details"]} == {"flows", "limits.max_sessions"}
    assert all(d["line"] for d in error["details"])
    detail = api.get("/api/mobs/desk").json()
    assert detail["revision"] == 1 and detail["bootstrap"]["counts"]["dormant"] == 0


def test_other_workspaces_mob_is_a_404(api, other_workspace):
    from mobs_app.services import mob_load

    mob_load(workspace=other_workspace, source=MOB_TOML)
    assert api.get("/api/mobs/desk").status_code == 404


def test_identity_routes_send_dispatch_and_idempotency(api, django_capture_on_commit_callbacks):
    _post(api, "/api/mobs", {"toml": MOB_TOML})
    assert _post(api, "/api/mobs/desk/identities", {"key": "lead-1", "profile": "lead"}).status_code == 201
    made = _post(
        api, "/api/mobs/desk/identities", {"key": "ops", "profile": "specialist", "addressability": "internal_only"}
    )
    assert made.status_code == 201 and made.json()["state"] == "dormant" and made.json()["session_id"] == ""
    assert _post(api, "/api/mobs/desk/identities", {"key": "a b", "profile": "lead"}).status_code == 422
    assert api.get("/api/mobs/desk/identities").json()["count"] == 2

    refused = _post(api, "/api/mobs/desk/identities/ops/send", {"text": "hi"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_addressable"
    assert _post(api, "/api/mobs/desk/identities/nobody/send", {"text": "hi"}).status_code == 404
    assert (
        _post(api, "/api/mobs/desk/identities/nobody/dispatch", {"text": "hi", "origin": "system"}).status_code == 404
    )
    assert _post(api, "/api/mobs/desk/identities/ops/dispatch", {"text": "hi"}).status_code == 422
    with django_capture_on_commit_callbacks() as callbacks:
        first = _post(
            api, "/api/mobs/desk/identities/ops/dispatch", {"text": "hi", "origin": "system", "idempotency_key": "k1"}
        )
    assert first.status_code == 202 and first.json()["replayed"] is False and callbacks
    again = _post(
        api, "/api/mobs/desk/identities/ops/dispatch", {"text": "hi", "origin": "system", "idempotency_key": "k1"}
    )
    assert again.json()["cursor"] == first.json()["cursor"] and again.json()["replayed"] is True
    other_origin = _post(
        api, "/api/mobs/desk/identities/ops/dispatch", {"text": "hi", "origin": "scheduler", "idempotency_key": "k1"}
    )
    assert other_origin.json()["cursor"] != first.json()["cursor"]
    changed = _post(
        api, "/api/mobs/desk/identities/ops/dispatch", {"text": "bye", "origin": "system", "idempotency_key": "k1"}
    )
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"

    edges = api.get("/api/mobs/desk/edges").json()
    assert edges == [{"a": "lead-1", "b": "ops", "source": "wiring"}]
    assert _post(api, "/api/mobs/desk/reconcile-edges", {}).json() == {"added": [], "removed": []}


def test_lifecycle_routes_and_bootstrap(api, recording_sessions):
    _post(api, "/api/mobs", {"toml": MOB_TOML})
    _post(api, "/api/mobs/desk/identities", {"key": "alice", "profile": "specialist"})
    assert _post(api, "/api/mobs/desk/bootstrap", {"mode": "lazy_background_warm", "concurrency": 0}).status_code == 422
    assert (
        _post(api, "/api/mobs/desk/bootstrap", {"mode": "lazy_background_warm", "concurrency": 17}).status_code == 422
    )
    status = _post(api, "/api/mobs/desk/bootstrap", {"mode": "eager"})
    assert status.status_code == 202 and status.json()["counts"]["active"] == 1
    assert api.get("/api/mobs/desk/bootstrap").json()["complete"] is True
    body = api.get("/api/mobs/desk/identities/alice").json()
    assert body["state"] == "active" and body["continuity"]["generation"] == 0
    reset = _post(api, "/api/mobs/desk/identities/alice/reset", {}).json()
    assert reset["continuity"]["generation"] == 1 and reset["continuity"]["checkpoint_version"] == 0
    assert _post(api, "/api/mobs/desk/identities/alice/reload", {}).json()["continuity"]["generation"] == 1
    assert _post(api, "/api/mobs/desk/identities/alice/retire", {}).json()["state"] == "retired"
    assert api.delete("/api/mobs/desk/identities/alice").status_code == 204
    assert api.get("/api/mobs/desk/identities/alice").status_code == 404


def test_events_cursor_past_the_end_is_an_explicit_error(api):
    _post(api, "/api/mobs", {"toml": MOB_TOML})
    page = api.get("/api/mobs/desk/events?after_seq=0").json()
    assert page["events"][0]["kind"] == "definition_loaded"
    latest = page["latest_seq"]
    assert api.get(f"/api/mobs/desk/events?after_seq={latest}").json()["next_after_seq"] == latest
    stale = api.get(f"/api/mobs/desk/events?after_seq={latest + 5}")
    assert stale.status_code == 410 and stale.json()["error"]["details"]["latest_seq"] == latest
