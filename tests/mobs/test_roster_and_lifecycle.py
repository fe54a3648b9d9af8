import pytest

from mobs_app import services
from mobs_app.continuity import DatabaseContinuityStore, Ready, Uninitialized, continuity_checkpoint
from mobs_app.errors import (
    CapacityExceeded,
    InvalidInput,
    StaleCheckpointVersion,
    StaleFencingToken,
    UnknownIdentity,
)
from mobs_app.leases import identity_lease_acquire
from mobs_app.models import Continuity, Identity, Mob
from tests.support.mobs import MOB_TOML, add

pytestmark = pytest.mark.django_db


def test_each_change_is_a_new_revision_and_identical_text_is_not(workspace):
    first = services.mob_load(workspace=workspace, source=MOB_TOML)
    same = services.mob_load(workspace=workspace, source=MOB_TOML)
    changed = services.mob_load(workspace=workspace, source=MOB_TOML + "\n[limits]\nmax_sessions = 3\n")
    assert (first.definition.revision, same.created, changed.definition.revision) == (1, False, 2)
    assert Mob.objects.get(pk=first.mob.pk).max_sessions == 3


def test_invalid_definition_keeps_the_active_revision(mob, workspace):
    from mobs_app.errors import DefinitionInvalid

    with pytest.raises(DefinitionInvalid):
        services.mob_load(workspace=workspace, source=MOB_TOML.replace('model = "scripted"', "model = 3", 1))
    assert Mob.objects.get(pk=mob.pk).active_revision.revision == 1


def test_identity_key_rules_and_comms_requirement(mob):
    for key in ["", "a b", "a/b"]:
        with pytest.raises(InvalidInput):
            add(mob, key)
    with pytest.raises(InvalidInput) as err:
        add(mob, "quiet", profile="mute")
    assert err.value.code == "comms_required"


def test_lazy_bootstrap_of_1000_identities_creates_no_session(
    workspace, recording_sessions, django_assert_max_num_queries
):
    roster = "".join(f'\n[[roster]]\nkey = "member-{i}"\nprofile = "specialist"\n' for i in range(1000))
    source = MOB_TOML.replace("auto_wire_orchestrator = true", "auto_wire_orchestrator = false") + roster
    with django_assert_max_num_queries(100):
        result = services.mob_load(workspace=workspace, source=source)
        status = services.mob_bootstrap(mob=result.mob, mode="lazy")
    assert status["counts"] == {"dormant": 1000, "warming": 0, "active": 0, "broken": 0}
    assert recording_sessions.calls["open"] == []
    assert not Continuity.objects.exists()
    resolved = DatabaseContinuityStore().resolve_many(result.mob.pk, [f"member-{i}" for i in range(1000)])
    assert all(isinstance(r, Uninitialized) for r in resolved.values())


def test_reconcile_actions_activate_retire_hot_reload_respawn():
    current = {
        "keep": {"profile": "a", "display_name": "K"},
        "reload": {"profile": "a", "display_name": "old"},
        "respawn": {"profile": "a"},
        "gone": {"profile": "a"},
    }
    desired = [
        {"key": "keep", "profile": "a", "display_name": "K"},
        {"key": "reload", "profile": "a", "display_name": "new"},
        {"key": "respawn", "profile": "b"},
        {"key": "new", "profile": "a"},
    ]
    assert services.compute_reconcile_actions(desired, current) == {
        "activate": ["new"],
        "retire": ["gone"],
        "hot_reload": ["reload"],
        "respawn": ["respawn"],
    }


def test_materialize_creates_then_resumes_from_continuity(mob, recording_sessions):
    ident = add(mob, "alice")
    active = services.identity_materialize(identity=ident)
    assert active.state == "active"
    record = Continuity.objects.get(pk=ident.pk)
    assert record.generation == 0 and record.session_id
    Identity.objects.filter(pk=ident.pk).update(state="dormant")
    services.identity_materialize(identity=services.identity_get(mob=mob, key="alice"))
    opens = recording_sessions.calls["open"]
    assert [o["resume"] for o in opens] == [False, True]
    assert opens[0]["session_id"] == opens[1]["session_id"]
    assert opens[0]["spec"].tools["shell"] is False  # the platform has not enabled shell


def test_a_broken_identity_fails_on_its_own(mob, recording_sessions):
    add(mob, "good")
    add(mob, "bad")
    recording_sessions.fail_for.add("bad")
    outcome = services.mob_warm(mob=mob, concurrency=1)
    assert outcome == {"materialized": 1, "failed": 1}
    bad = services.identity_get(mob=mob, key="bad")
    assert bad.state == "broken" and "embodiment failed" in bad.broken_reason
    assert services.identity_get(mob=mob, key="good").state == "active"
    status = services.bootstrap_status(mob=mob)
    assert status["counts"]["broken"] == 1 and status["counts"]["active"] == 1


def test_bootstrap_concurrency_bounds(mob):
    for bad in (0, 17, None):
        with pytest.raises(InvalidInput):
            services.mob_bootstrap(mob=mob, mode="lazy_background_warm", concurrency=bad)


def test_max_sessions_admits_n_and_refuses_the_next(workspace):
    mob = services.mob_load(workspace=workspace, source=MOB_TOML + "\n[limits]\nmax_sessions = 2\n").mob
    for key in ("a", "b", "c"):
        add(mob, key)
    services.identity_materialize(identity=services.identity_get(mob=mob, key="a"))
    services.identity_materialize(identity=services.identity_get(mob=mob, key="b"))
    with pytest.raises(CapacityExceeded) as err:
        services.identity_materialize(identity=services.identity_get(mob=mob, key="c"))
    assert err.value.message == "Max sessions reached (2/2)"
    assert services.identity_get(mob=mob, key="c").state == "dormant"


def test_checkpoint_versions_strictly_increase_and_stale_tokens_are_fenced(mob):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    record = Continuity.objects.get(pk=ident.pk)
    grant = identity_lease_acquire(key=ident.lease_key, holder="runtime-a")
    kwargs = {"identity": ident, "session_id": record.session_id, "generation": 0}
    continuity_checkpoint(token=grant.token, version=1, **kwargs)
    with pytest.raises(StaleCheckpointVersion):
        continuity_checkpoint(token=grant.token, version=1, **kwargs)
    newer = identity_lease_acquire(key=ident.lease_key, holder="runtime-a")  # same holder again: the token advances
    with pytest.raises(StaleFencingToken):
        continuity_checkpoint(token=grant.token, version=2, **kwargs)
    continuity_checkpoint(token=newer.token, version=2, **kwargs)


def test_reset_advances_generation_new_session_and_fences_the_old_holder(mob):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    before = Continuity.objects.get(pk=ident.pk)
    old = identity_lease_acquire(key=ident.lease_key, holder="old-runtime", ttl=30)
    from lashops.core.services import lease_release

    lease_release(scope="identity", key=ident.lease_key, token=old.token)
    services.identity_reset(identity=services.identity_get(mob=mob, key="alice"))
    after = Continuity.objects.get(pk=ident.pk)
    assert (after.generation, after.checkpoint_version) == (before.generation + 1, 0)
    assert after.session_id != before.session_id
    with pytest.raises(StaleFencingToken):
        continuity_checkpoint(
            identity=ident, token=old.token, session_id=after.session_id, generation=after.generation, version=1
        )
    resolved = DatabaseContinuityStore().resolve_many(mob.pk, ["alice"])["alice"]
    assert isinstance(resolved, Ready) and resolved.generation == 1


def test_reload_keeps_session_and_generation(mob):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    before = Continuity.objects.get(pk=ident.pk)
    services.identity_reload(identity=services.identity_get(mob=mob, key="alice"))
    after = Continuity.objects.get(pk=ident.pk)
    assert (after.session_id, after.generation) == (before.session_id, before.generation)


def test_retire_is_lease_checked_and_delete_resolves_uninitialized(mob):
    ident = add(mob, "alice")
    services.identity_materialize(identity=ident)
    held = identity_lease_acquire(key=ident.lease_key, holder="someone-else", ttl=30)
    from lashops.core.errors import LeaseHeld

    with pytest.raises(LeaseHeld) as err:
        services.identity_retire(identity=services.identity_get(mob=mob, key="alice"))
    assert err.value.holder == "someone-else"
    from lashops.core.services import lease_release

    lease_release(scope="identity", key=ident.lease_key, token=held.token)
    report = services.identity_retire(identity=services.identity_get(mob=mob, key="alice"))
    assert report["state"] == "retired" and report["fencing_token"] > held.token
    assert Mob.objects.get(pk=mob.pk).session_count == 0
    services.identity_delete(identity=services.identity_get(mob=mob, key="alice"))
    with pytest.raises(UnknownIdentity):
        services.identity_get(mob=mob, key="alice")
    assert isinstance(DatabaseContinuityStore().resolve_many(mob.pk, ["alice"])["alice"], Uninitialized)
