import pytest

from lashops.core.models import ApiKey
from lashops.core.services import api_key_authenticate

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="pw-123456")
    client.force_login(user)
    return client


def test_admin_is_titled_lashops(staff):
    page = staff.get("/admin/")
    assert page.status_code == 200
    assert b"LashOps" in page.content


def test_admin_creates_a_key_and_shows_it_once(staff, workspace):
    response = staff.post("/admin/core/apikey/add/", {"workspace": workspace.pk, "name": "from-admin"}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    start = text.index("lsk_")
    plaintext = text[start : text.index(" ", start)].rstrip("<").split("<")[0]
    key = api_key_authenticate(plaintext=plaintext)
    assert key is not None and key.name == "from-admin"
    again = staff.get(f"/admin/core/apikey/{key.pk}/change/").content.decode()
    assert plaintext not in again


def test_admin_revoke_action(staff, workspace, api_key):
    key = ApiKey.objects.get(workspace=workspace)
    staff.post("/admin/core/apikey/", {"action": "revoke_keys", "_selected_action": [key.pk]}, follow=True)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


@pytest.mark.parametrize("model", ["workspace", "apikey", "event", "lease", "effect"])
def test_admin_changelists_render(staff, workspace, model):
    assert staff.get(f"/admin/core/{model}/").status_code == 200
