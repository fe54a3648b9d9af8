"""mobkit §5 invariants not covered elsewhere: listing never materializes (8, 9), the lease
provider contract (21), late writes on an abandoned session (23), canonical edges (25), wiring
that converges whatever the bring-up order (26) and a reconciler that keeps operator edges (27)."""

import pytest

from mobs_app import services
from mobs_app.continuity import DatabaseContinuityStore, Ready, continuity_checkpoint
from mobs_app.errors import InvalidInput, NotFound
from mobs_app.leases import Acquired, AlreadyHeld, DatabaseIdentityLeases
from mobs_app.models import Continuity, Edge
from mobs_app.topology import canonical
from tests.support.mobs import MOB_TOML, add

pytestmark = pytest.mark.django_db

MESH = MOB_TOML + '\n[[wiring.role_wiring]]\na = "specialist"\nb = "specialist"\n'


def _edges(mob) -> set[tuple[str, str, str]]:
    return set(Edge.objects.filter(mob=mob).values_list("a", "b", "source"))


def test_listing_inspecting_and_rewiring_dormant_identities_never_materializes(api, mob, recording_sessions):
    add(mob, "lead-1", profile="lead")
    ident = add(mob, "alice")
    services.identity_reset(identity=ident)  # a dormant identity with a continuity record
    assert api.get("/api/mobs/desk/identities").json()["count"] == 2
    shown = api.get("/api/mobs/desk/identities/alice").json()
    assert (shown["state"], shown["health"]) == ("dormant", "dormant")
    assert shown["session_id"] == Continuity.objects.get(pk=ident.pk).session_id != ""
    api.post("/api/mobs/desk/reconcile-edges")
    assert recording_sessions.calls["open"] == [] and recording_sessions.calls["deliver"] == []


def test_lease_provider_contract_tokens_positive_and_rising_per_key_one_holder():
    leases = DatabaseIdentityLeases()
    first = leases.acquire(["m:a", "m:b"], holder="runtime-1", ttl=30)
    assert all(isinstance(g, Acquired) and g.token > 0 for g in first)
    # Tokens fence per identity (a monotonic counter per key), so two identities may share a value.
    held = leases.acquire(["m:a"], holder="runtime-2", ttl=30)[0]
    assert isinstance(held, AlreadyHeld) and held.holder == "runtime-1"
    assert leases.release("m:a", token=first[0].token)
    assert leases.renew("m:a", token=first[0].token, ttl=30) is False  # Lost
    again = leases.acquire(["m:a"], holder="runtime-2", ttl=30)[0]
    assert isinstance(again, Acquired) and again.token > first[0].token


def test_a_late_checkpoint_on_an_abandoned_session_is_not_found_and_the_record_stays_ready(mob):
    ident = services.identity_materialize(identity=add(mob, "alice"))
    old_session = Continuity.objects.get(pk=ident.pk).session_id
    services.identity_reset(identity=services.identity_get(mob=mob, key="alice"))
    grant = DatabaseIdentityLeases().acquire([ident.lease_key], holder="late", ttl=30)[0]
    with pytest.raises(NotFound) as err:
        continuity_checkpoint(identity=ident, token=grant.token, session_id=old_session, generation=0, version=5)
    assert err.value.code == "abandoned_session"
    resolved = DatabaseContinuityStore().resolve_many(mob.pk, ["alice"])["alice"]
    assert isinstance(resolved, Ready) and resolved.generation == 1 and resolved.checkpoint_version == 0


def test_edges_are_canonical_and_a_full_mesh_of_three_is_three_edges(workspace):
    assert canonical("b", "a") == ("a", "b")
    for a, b in (("a", "a"), ("", "b"), ("a", "")):
        with pytest.raises(InvalidInput):
            canonical(a, b)
    mob = services.mob_load(workspace=workspace, source=MESH).mob
    for key in ("x", "y", "z"):
        add(mob, key)
    assert _edges(mob) == {("x", "y", "wiring"), ("x", "z", "wiring"), ("y", "z", "wiring")}
    with pytest.raises(InvalidInput):
        services.edge_add(mob=mob, a="x", b="x")


def test_declared_wiring_converges_whatever_the_bring_up_order(workspace):
    mob = services.mob_load(workspace=workspace, source=MESH).mob
    add(mob, "builder")
    add(mob, "reviewer")
    add(mob, "lead", profile="lead")  # the orchestrator comes up last
    want = {("builder", "lead", "wiring"), ("lead", "reviewer", "wiring"), ("builder", "reviewer", "wiring")}
    assert _edges(mob) == want
    Edge.objects.filter(mob=mob, a="builder").delete()  # a partial crew
    report = services.edges_reconcile(mob=mob)
    assert sorted(report["added"]) == [["builder", "lead", "wiring"], ["builder", "reviewer", "wiring"]]
    assert _edges(mob) == want


def test_reconcile_never_removes_operator_edges_and_without_wiring_reports_nothing(workspace):
    source = MOB_TOML.replace("auto_wire_orchestrator = true", "auto_wire_orchestrator = false")
    mob = services.mob_load(workspace=workspace, source=source).mob
    add(mob, "alice")
    add(mob, "bob")
    services.edge_add(mob=mob, a="bob", b="alice")
    assert services.edges_reconcile(mob=mob) == {"added": [], "removed": []}
    assert _edges(mob) == {("alice", "bob", "operator")}
