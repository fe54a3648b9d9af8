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


# --- safe by construction (issue 10, item 6) -------------------------------------------------

MUST_BE_READ_ONLY = {
    "core.event",
    "core.effect",
    "core.lease",
    "core.workerheartbeat",
    "sessions_app.turn",
    "sessions_app.usagerecord",
    "sessions_app.pendinginput",
    "sessions_app.sessioncommand",
    "processes_app.process",
    "processes_app.triggeroccurrence",
    "mobs_app.identitylease",
    "mobs_app.mobevent",
    "mobs_app.consoleframe",
    "mobs_app.mob",
}


@pytest.fixture
def one_world(django_user_model, settings, tmp_path):
    from tests.core.test_admin_scoping import _world
    from tests.mobs import fakes

    settings.MEDIA_ROOT = str(tmp_path)
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:RecordingMemberSessions"
    fakes.reset()
    yield _world("aa1a", django_user_model)
    fakes.reset()


def _admin_url(model, view: str, *args) -> str:
    from django.urls import reverse

    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_journals_events_effects_leases_usage_and_turns_are_read_only_with_no_delete(staff, one_world):
    from django.contrib import admin
    from django.contrib.admin.utils import quote

    request = staff.get("/admin/").wsgi_request
    registered = {m._meta.label_lower: (m, a) for m, a in admin.site._registry.items()}
    assert set(registered) >= MUST_BE_READ_ONLY
    for label in sorted(MUST_BE_READ_ONLY):
        model, model_admin = registered[label]
        assert model_admin.read_only is True, label
        assert not model_admin.has_add_permission(request), label
        assert not model_admin.has_change_permission(request), label
        assert not model_admin.has_delete_permission(request), label
        assert "delete_selected" not in model_admin.get_actions(request), label
        obj = model_admin.get_queryset(request).first()
        if obj is not None:
            assert staff.get(_admin_url(model, "delete", quote(obj.pk))).status_code == 403, label
        assert staff.get(_admin_url(model, "add")).status_code == 403, label


def test_every_editable_admin_edits_only_its_allowlist(staff, one_world):
    """Walk the registry: an admin is read-only, or the fields its change form can edit are
    exactly within its explicit ``editable_fields`` (ids, workspace, state never among them)."""
    from django.contrib import admin
    from django.contrib.admin.utils import quote

    never_editable = {"id", "workspace", "status", "state", "token", "cursor", "seq", "head_revision", "parent"}
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        assert model_admin.read_only or isinstance(model_admin.editable_fields, tuple), label
        assert model_admin.deletion in ("never", "service", "plain"), label
        if model_admin.read_only:
            continue
        assert not (set(model_admin.editable_fields) & never_editable), label
        obj = model._default_manager.order_by("pk").first()
        if obj is None:
            continue
        page = staff.get(_admin_url(model, "change", quote(obj.pk)))
        assert page.status_code == 200, label
        editable = set(page.context["adminform"].form.fields)
        assert editable <= set(model_admin.editable_fields), (label, editable - set(model_admin.editable_fields))


def test_delete_selected_is_refused_on_events(staff, one_world):
    from lashops.core.models import Event

    event = Event.objects.filter(workspace=one_world).first()
    response = staff.post(
        "/admin/core/event/", {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert Event.objects.filter(pk=event.pk).exists()
