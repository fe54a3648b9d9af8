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
