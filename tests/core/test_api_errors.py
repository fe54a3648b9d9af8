"""The one error model under /api/: 401, 404, 405, 413, 422, domain errors; never HTML."""

import pytest

pytestmark = pytest.mark.django_db


def test_missing_key_gets_401_json(client, workspace):
    response = client.get("/api/workspace")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_wrong_key_gets_401_json(client, workspace):
    response = client.get("/api/workspace", HTTP_AUTHORIZATION="Bearer lsk_nothere_secret")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]["message"]


def test_malformed_json_gets_422_with_error_model(api):
    response = api.post("/api/keys", data="{not json", content_type="application/json")
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert body["details"]


def test_invalid_field_gets_422_with_field_path(api):
    response = api.post("/api/keys", data={"name": ""}, content_type="application/json")
    assert response.status_code == 422
    paths = [d["path"] for d in response.json()["error"]["details"]]
    assert "body.payload.name" in paths


def test_missing_field_gets_422_with_field_path(api):
    response = api.post("/api/keys", data={}, content_type="application/json")
    assert response.status_code == 422
    assert any(d["path"].endswith("name") for d in response.json()["error"]["details"])


def test_unknown_api_path_is_404_json(api):
    response = api.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_wrong_method_is_405_json_with_allow(api):
    response = api.put("/api/workspace", data={}, content_type="application/json")
    assert response.status_code == 405
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert "GET" in error["details"]["allow"]


def test_oversized_body_is_413_json_and_nothing_is_written(api, settings):
    from lashops.core.models import ApiKey

    before = ApiKey.objects.count()
    settings.LASHOPS_API_MAX_BODY_BYTES = 2048
    response = api.post("/api/keys", data={"name": "x" * 5000}, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["details"]["limit"] == 2048
    assert ApiKey.objects.count() == before


def test_bad_query_parameter_is_422(api):
    response = api.get("/api/events?after=abc")
    assert response.status_code == 422
    assert any("after" in d["path"] for d in response.json()["error"]["details"])


def test_health_needs_no_key_and_reports_components(client, db):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is True
    assert body["runner"]["detail"]["mode"] == "in_process"
    assert body["versions"]["django"].startswith("5.2")


def test_openapi_and_docs_are_served(client, db):
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/health" in schema.json()["paths"]
    assert client.get("/api/docs").status_code == 200


# --- bad input at the edge (issue 10, item 4): 422 naming the field, never a 500 ----------------


def _post_json(api, path, body):
    return api.post(path, data=body, content_type="application/json")


def _detail_paths(response):
    return [d["path"] for d in response.json()["error"]["details"]]


def test_nul_in_a_body_string_is_422_naming_the_field(api):
    response = _post_json(api, "/api/sessions", '{"system_prompt": "a\\u0000b"}')
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "body.system_prompt" in _detail_paths(response)


def test_nul_deep_in_metadata_or_in_a_key_is_422(api):
    response = _post_json(api, "/api/sessions", '{"metadata": {"a": [1, {"b": "x\\u0000"}], "k\\u0000": 1}}')
    assert response.status_code == 422
    paths = _detail_paths(response)
    assert "body.metadata.a.1.b" in paths
    assert any(p.startswith("body.metadata.") and "k" in p for p in paths if p != "body.metadata.a.1.b")


def test_a_lone_surrogate_is_422(api):
    response = _post_json(api, "/api/sessions", '{"system_prompt": "s\\ud800"}')
    assert response.status_code == 422
    assert "body.system_prompt" in _detail_paths(response)


def test_an_overflowing_or_non_finite_number_is_422(api):
    for raw in ('{"metadata": {"n": 1e400}}', '{"metadata": {"n": NaN}}', '{"metadata": {"n": -Infinity}}'):
        response = _post_json(api, "/api/sessions", raw)
        assert response.status_code == 422, raw
        assert response.json()["error"]["code"] == "validation_error"


def test_deeply_nested_json_is_422(api):
    for depth in (900, 5000):  # 900 passed the parser and crashed re-encoding it; 5000 broke the parser
        response = _post_json(api, "/api/sessions", '{"metadata": {"a": ' + "[" * depth + "]" * depth + "}}")
        assert response.status_code == 422, depth
        assert response.json()["error"]["details"][0]["type"] == "json_too_deep"
    nested = '{"metadata": {"a": ' + "[" * 90 + "]" * 90 + "}}"
    assert _post_json(api, "/api/sessions", nested).status_code == 201


def test_a_json_array_body_is_422_and_creates_nothing(api):
    from sessions_app.models import Session

    response = _post_json(api, "/api/sessions", "[]")
    assert response.status_code == 422
    assert _detail_paths(response) == ["body"]
    assert Session.objects.count() == 0


def test_nul_in_a_query_parameter_is_422_naming_it(api):
    response = api.get("/api/processes?definition=a%00b")
    assert response.status_code == 422
    assert "query.definition" in _detail_paths(response)


def test_nul_in_a_path_id_is_422_naming_it(api):
    for path in ("/api/sessions/a%00b", "/api/processes/a%00b", "/api/mobs/a%00b/identities/x"):
        response = api.get(path)
        assert response.status_code == 422, path
        assert _detail_paths(response)[0].startswith("path."), path


def test_a_nul_in_the_bearer_token_is_401(client, db):
    response = client.get("/api/workspace", HTTP_AUTHORIZATION="Bearer lsk_a\x00b_c")
    assert response.status_code == 401


def test_huge_offsets_limits_and_cursors_are_422(api):
    for path in (
        "/api/sessions?offset=100000000000000000000",
        "/api/sessions?limit=100000000000000000000",
        "/api/events?after=100000000000000000000",
        "/api/processes/changes?since=-1",
        "/api/keys/100000000000000000000",
    ):
        response = api.get(path)
        assert response.status_code == 422, path


def test_a_console_cursor_of_non_ascii_digits_is_422(api, workspace):
    from mobs_app.services import mob_load
    from tests.support.mobs import MOB_TOML

    mob_load(workspace=workspace, source=MOB_TOML)
    for cursor in ("console:%C2%B2", "console:99999999999999999999999"):
        response = api.get(f"/api/mobs/desk/console?after={cursor}")
        assert response.status_code == 422, cursor


def test_bootstrap_concurrency_out_of_bounds_is_422(api, workspace):
    from mobs_app.services import mob_load
    from tests.support.mobs import MOB_TOML

    mob_load(workspace=workspace, source=MOB_TOML)
    for concurrency in (-1, 0, 17, 10**30):
        response = _post_json(api, "/api/mobs/desk/bootstrap", {"mode": "eager", "concurrency": concurrency})
        assert response.status_code == 422, concurrency
        assert "body.payload.concurrency" in _detail_paths(response)


def test_process_timeout_out_of_bounds_is_422(api):
    for timeout in (1e308, 0, -1):
        body = {
            "kind": "external",
            "definition": "x",
            "disposition": "externally_owned",
            "timeout_seconds": timeout,
        }
        response = _post_json(api, "/api/processes", body)
        assert response.status_code == 422, timeout
        assert "body.payload.timeout_seconds" in _detail_paths(response)


def test_the_same_session_twice_in_grant_sessions_is_422(api):
    assert _post_json(api, "/api/sessions", {"id": "s1"}).status_code == 201
    body = {"kind": "external", "definition": "x", "disposition": "externally_owned", "grant_sessions": ["s1", "s1"]}
    response = _post_json(api, "/api/processes", body)
    assert response.status_code == 422
    assert "body.payload.grant_sessions" in _detail_paths(response)


def test_an_attachment_name_over_255_characters_is_422(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    assert _post_json(api, "/api/sessions", {"id": "s1"}).status_code == 201
    upload = SimpleUploadedFile("ok.txt", b"hello", content_type="text/plain")
    response = api.post("/api/sessions/s1/attachments", {"file": upload, "filename": "f" * 256})
    assert response.status_code == 422
    assert "form.filename" in _detail_paths(response)


def test_nul_in_a_multipart_field_is_422(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    # (Django's multipart parser already drops NUL from uploaded file names.)
    assert _post_json(api, "/api/sessions", {"id": "s1"}).status_code == 201
    upload = SimpleUploadedFile("ok.txt", b"hello", content_type="text/plain")
    response = api.post("/api/sessions/s1/attachments", {"file": upload, "filename": "a\x00b"})
    assert response.status_code == 422
    assert "form.filename" in _detail_paths(response)


def test_multipart_without_a_boundary_is_422(api):
    assert _post_json(api, "/api/sessions", {"id": "s1"}).status_code == 201
    response = api.generic("POST", "/api/sessions/s1/attachments", b"--x\r\n", content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_a_loose_topology_mode_is_refused(api):
    from tests.support.mobs import MOB_TOML

    response = _post_json(api, "/api/mobs", {"toml": MOB_TOML + '\n[topology]\nmode = "loose"\n'})
    assert response.status_code == 422
    assert any("topology.mode" in str(d) for d in response.json()["error"]["details"])


# --- 401 before CSRF ------------------------------------------------------------------------------


def test_unsafe_methods_without_credentials_get_401(workspace):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)  # as a real caller: the test client skips CSRF by default
    for method, path in (("post", "/api/sessions"), ("delete", "/api/sessions/x"), ("patch", "/api/sessions/x")):
        response = getattr(client, method)(path, data="{}", content_type="application/json")
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthorized"


def test_a_logged_in_session_without_csrf_token_still_gets_403_csrf_failed(workspace, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_user(username="ann", password="pw")
    workspace.members.add(user)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/workspace").status_code == 200
    response = browser.post("/api/sessions", data="{}", content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"


# --- the OpenAPI document tells the truth ----------------------------------------------------------


def test_every_operation_documents_the_edge_statuses(client, db):
    schema = client.get("/api/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "503" in responses, (method, path)
            if operation.get("security"):
                assert "401" in responses, (method, path)
                if method != "get":
                    assert "403" in responses, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in responses, (method, path)


def test_limits_offsets_and_cursors_are_bounded_in_the_document(client, db):
    schema = client.get("/api/openapi.json").json()
    checked = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["name"] in {"limit", "offset", "after", "since", "after_seq"}:
                    bounds = parameter["schema"]
                    if bounds.get("type") == "integer":
                        assert "maximum" in bounds and "minimum" in bounds, (method, path, parameter["name"])
                        checked += 1
    assert checked >= 10
