import pytest
from django.core.management import call_command

from lashops.core.models import ApiKey
from lashops.core.services import api_key_authenticate, api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_key_is_stored_hashed_and_authenticates(workspace):
    issued = api_key_create(workspace=workspace, name="ci")
    row = ApiKey.objects.get(pk=issued.api_key.pk)
    assert issued.plaintext.startswith("lsk_")
    assert issued.plaintext.split("_", 2)[2] not in row.secret_hash
    assert api_key_authenticate(plaintext=issued.plaintext).pk == row.pk


def test_authenticating_records_last_used(workspace):
    issued = api_key_create(workspace=workspace, name="ci")
    assert issued.api_key.last_used_at is None
    api_key_authenticate(plaintext=issued.plaintext)
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at is not None


def test_revoked_key_no_longer_authenticates(client, workspace):
    issued = api_key_create(workspace=workspace, name="ci")
    api_key_revoke(api_key=issued.api_key)
    response = client.get("/api/workspace", HTTP_AUTHORIZATION=f"Bearer {issued.plaintext}")
    assert response.status_code == 401


def test_tampered_secret_is_refused(workspace):
    issued = api_key_create(workspace=workspace, name="ci")
    assert api_key_authenticate(plaintext=issued.plaintext[:-2] + "xx") is None


def test_api_creates_key_shown_once_then_lists_without_secret(api):
    created = api.post("/api/keys", data={"name": "deploy"}, content_type="application/json")
    assert created.status_code == 201
    plaintext = created.json()["key"]
    listed = api.get("/api/keys").json()
    assert any(k["name"] == "deploy" for k in listed["items"])
    assert plaintext not in str(listed)
    assert "key" not in api.get(f"/api/keys/{created.json()['id']}").json()


def test_api_revoke_key(api):
    created = api.post("/api/keys", data={"name": "temp"}, content_type="application/json").json()
    revoked = api.delete(f"/api/keys/{created['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None


def test_other_workspaces_key_is_404_not_403(api, other_workspace):
    foreign = api_key_create(workspace=other_workspace, name="theirs").api_key
    assert api.get(f"/api/keys/{foreign.pk}").status_code == 404
    assert api.delete(f"/api/keys/{foreign.pk}").status_code == 404
    assert ApiKey.objects.get(pk=foreign.pk).revoked_at is None


def test_workspace_endpoint_shows_the_keys_workspace(api, workspace):
    assert api.get("/api/workspace").json()["slug"] == workspace.slug


def test_management_command_create_list_revoke(capsys):
    call_command("lashops_apikey", "create", "--workspace", "ops", "--name", "cli")
    plaintext = capsys.readouterr().out.strip()
    assert api_key_authenticate(plaintext=plaintext) is not None
    call_command("lashops_apikey", "list", "--workspace", "ops")
    assert "cli" in capsys.readouterr().out
    prefix = plaintext.split("_")[1]
    call_command("lashops_apikey", "revoke", prefix)
    assert api_key_authenticate(plaintext=plaintext) is None


def test_logged_in_user_uses_their_workspace_with_csrf(client, workspace, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw-123456")
    workspace.members.add(user)
    client.force_login(user)
    assert client.get("/api/workspace").json()["slug"] == "acme"
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    refused = strict.post("/api/keys", data={"name": "x"}, content_type="application/json")
    assert refused.status_code in (401, 403)
    assert refused.json()["error"]["code"] in ("unauthorized", "csrf_failed")


def test_user_outside_workspace_is_401(client, workspace, django_user_model):
    user = django_user_model.objects.create_user("stranger", password="pw-123456")
    client.force_login(user)
    assert client.get("/api/workspace").status_code == 401
