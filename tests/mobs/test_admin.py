"""Mob admin: every page renders, and the actions work through a changelist POST."""

import pytest

from lashops.core.models import Lease
from mobs_app import services
from mobs_app.leases import identity_lease_acquire
from mobs_app.models import Continuity, Edge, Identity, Mob
from tests.support.mobs import MOB_TOML, add

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-123456"))
    return client


def _act(staff, model: str, action: str, pks: list[int]) -> str:
    page = staff.post(f"/admin/mobs_app/{model}/", {"action": action, "_selected_action": pks}, follow=True)
    assert page.status_code == 200
    return page.content.decode()


@pytest.mark.parametrize(
    "model", ["mob", "mobdefinition", "identity", "edge", "identitylease", "consoleframe", "mobevent", "contact"]
)
def test_changelists_and_add_pages_render(staff, mob, model):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    assert staff.get(f"/admin/mobs_app/{model}/").status_code == 200
    if model not in ("mob", "identitylease", "consoleframe", "mobevent"):
        assert staff.get(f"/admin/mobs_app/{model}/add/").status_code == 200
    assert staff.get(f"/admin/mobs_app/identity/{ident.pk}/change/").status_code == 200
    assert staff.get(f"/admin/mobs_app/mobdefinition/{mob.active_revision_id}/change/").status_code == 200


def test_definition_editor_loads_a_revision_and_shows_every_problem(staff, workspace, mob):
    bad = staff.post("/admin/mobs_app/mobdefinition/add/", {"workspace": workspace.pk, "source": "[mob]\nid = 3\n"})
    assert bad.status_code == 200 and "line " in bad.content.decode()
    source = MOB_TOML + "\n[limits]\nmax_sessions = 5\n"
    ok = staff.post("/admin/mobs_app/mobdefinition/add/", {"workspace": workspace.pk, "source": source}, follow=True)
    assert "is now revision 2" in ok.content.decode()
    assert Mob.objects.get(pk=mob.pk).max_sessions == 5


def test_identity_actions_materialize_reload_reset_retire(staff, mob, recording_sessions):
    ident = add(mob, "alice")
    assert "Materialized: 1" in _act(staff, "identity", "materialize", [ident.pk])
    assert Identity.objects.get(pk=ident.pk).state == "active"
    session_id = Continuity.objects.get(pk=ident.pk).session_id
    assert "Reloaded: 1" in _act(staff, "identity", "reload", [ident.pk])
    assert Continuity.objects.get(pk=ident.pk).session_id == session_id
    assert "Reset: 1" in _act(staff, "identity", "reset", [ident.pk])
    record = Continuity.objects.get(pk=ident.pk)
    assert (record.generation, record.checkpoint_version) == (1, 0) and record.session_id != session_id
    assert "Retired: 1" in _act(staff, "identity", "retire", [ident.pk])
    assert Identity.objects.get(pk=ident.pk).state == "retired"


def test_identity_action_reports_a_held_lease_as_an_error(staff, mob):
    ident = add(mob, "alice")
    identity_lease_acquire(key=ident.lease_key, holder="elsewhere", ttl=60)
    text = _act(staff, "identity", "retire", [ident.pk])
    assert "elsewhere" in text and "Retired: 0" in text


@pytest.mark.django_db(transaction=True)
def test_warm_actions_materialize_dormant_identities_in_the_background(staff, mob, recording_sessions):
    from tests.support.polling import wait_until

    alice, bob = add(mob, "alice"), add(mob, "bob")
    assert "Warming started" in _act(staff, "identity", "warm", [alice.pk])
    wait_until(lambda: Identity.objects.get(pk=alice.pk).state == "active")
    assert Identity.objects.get(pk=bob.pk).state == "dormant"
    assert "Warming started: 1" in _act(staff, "mob", "warm", [mob.pk])
    wait_until(lambda: Identity.objects.get(pk=bob.pk).state == "active")
    assert Mob.objects.get(pk=mob.pk).bootstrap_mode == "lazy_background_warm"


def test_mob_and_edge_actions_reconcile_and_drain(staff, mob):
    lead, alice = add(mob, "lead-1", profile="lead"), add(mob, "alice")
    Edge.objects.filter(mob=mob).delete()  # a partial crew
    assert "Edges reconciled: 1" in _act(staff, "mob", "reconcile_edges", [mob.pk])
    assert list(Edge.objects.filter(mob=mob).values_list("a", "b", "source")) == [("alice", "lead-1", "wiring")]
    edge = Edge.objects.get(mob=mob)
    Edge.objects.create(mob=mob, a="alice", b="zed", source="wiring")  # stale managed edge
    assert "+0 -1 edges" in _act(staff, "edge", "reconcile", [edge.pk])
    assert "Draining: 1" in _act(staff, "mob", "drain", [mob.pk])
    assert Mob.objects.get(pk=mob.pk).shutting_down is True
    assert "Resumed: 1" in _act(staff, "mob", "resume", [mob.pk])
    assert Mob.objects.get(pk=mob.pk).shutting_down is False
    assert lead.key and alice.key


def test_operator_edge_added_in_admin_survives_reconcile(staff, mob):
    add(mob, "alice"), add(mob, "bob")
    page = staff.post("/admin/mobs_app/edge/add/", {"mob": mob.pk, "a": "bob", "b": "alice"}, follow=True)
    assert page.status_code == 200
    assert Edge.objects.filter(mob=mob, a="alice", b="bob", source="operator").exists()
    services.edges_reconcile(mob=mob)
    assert Edge.objects.filter(mob=mob, a="alice", b="bob", source="operator").exists()


def test_revoke_lease_action_fences_the_holder(staff, mob):
    from mobs_app.continuity import continuity_checkpoint
    from mobs_app.errors import StaleFencingToken

    ident = services.identity_materialize(identity=add(mob, "alice"))
    grant = identity_lease_acquire(key=ident.lease_key, holder="runtime-a", ttl=60)
    lease = Lease.objects.get(scope="identity", key=ident.lease_key)
    assert "Revoked 1" in _act(staff, "identitylease", "revoke", [lease.pk])
    record = Continuity.objects.get(pk=ident.pk)
    with pytest.raises(StaleFencingToken):
        continuity_checkpoint(
            identity=ident, token=grant.token, session_id=record.session_id, generation=record.generation, version=1
        )


def test_contact_form_refuses_an_unknown_transport(staff, workspace):
    page = staff.post(
        "/admin/mobs_app/contact/add/", {"workspace": workspace.pk, "mob_ref": "far", "transport": "http://x"}
    )
    assert page.status_code == 200 and "invalid transport" in page.content.decode()


def test_identity_delete_button_goes_through_identity_delete(staff, mob):
    from mobs_app.models import MobEvent

    ident = add(mob, "alice")
    response = staff.post(f"/admin/mobs_app/identity/{ident.pk}/delete/", {"post": "yes"}, follow=True)
    assert "Deleted identity alice" in response.content.decode()
    assert not Identity.objects.filter(pk=ident.pk).exists()
    assert MobEvent.objects.filter(mob=mob, kind="member_deleted", identity="alice").exists()


def test_identity_key_mob_and_state_cannot_be_changed(staff, mob, workspace):
    ident = add(mob, "alice")
    page = staff.post(
        f"/admin/mobs_app/identity/{ident.pk}/change/",
        {
            "key": "mallory",
            "mob": mob.pk,
            "profile": "lead",
            "state": "active",
            "display_name": "Alice",
            "labels": "{}",
            "context": "{}",
            "initial_message": "",
            "addressability": "internal_only",
            **_management_forms(staff, f"/admin/mobs_app/identity/{ident.pk}/change/"),
        },
    )
    assert page.status_code == 302
    ident.refresh_from_db()
    assert (ident.key, ident.profile, ident.state, ident.display_name) == ("alice", "specialist", "dormant", "Alice")


def _management_forms(staff, url: str) -> dict[str, str]:
    page = staff.get(url)
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        form = inline.formset.management_form
        data |= {form.add_prefix(name): value for name, value in form.initial.items()}
    return data
