"""Hooks named in LASHOPS_MOB_HOOKS run in order: before_create (may change the request, and
refuse), after_create, post_spawn, post_reconcile with the report, on_error on a failed spawn."""

import pytest

from mobs_app import services
from mobs_app.errors import Conflict
from tests.mobs import hook_recorder
from tests.support.mobs import add

pytestmark = pytest.mark.django_db

HOOKS = "tests.mobs.hook_recorder:"


@pytest.fixture(autouse=True)
def recorder(settings):
    settings.LASHOPS_MOB_HOOKS = {
        name: [HOOKS + name] for name in ("before_create", "after_create", "post_spawn", "post_reconcile", "on_error")
    }
    hook_recorder.calls.clear()
    hook_recorder.refuse.clear()
    yield hook_recorder.calls
    hook_recorder.calls.clear()


def test_hooks_run_in_order_and_before_create_shapes_the_session(mob, recorder, recording_sessions):
    recorder.clear()  # loading the mob reconciled its (empty) edges
    ident = add(mob, "lead-1", profile="lead", labels={"who": "lead-1"})
    assert recorder == [("post_reconcile", [])]  # registering wires nobody yet (a lead alone)
    add(mob, "alice", labels={"who": "alice"})
    assert recorder[-1] == ("post_reconcile", [("alice", "lead-1", "wiring")])
    recorder.clear()

    services.identity_materialize(identity=ident)
    session_id = recording_sessions.calls["open"][0]["session_id"]
    assert recorder == [
        ("before_create", "lead-1"),
        ("after_create", session_id, "chosen-by-hook"),
        ("post_spawn", "lead-1", session_id),
    ]
    spec = recording_sessions.calls["open"][0]["spec"]
    assert spec.model["model"] == "chosen-by-hook" and spec.labels["hooked"] == "yes"


def test_a_failed_spawn_fires_on_error_and_a_refusing_before_create_breaks_only_that_member(
    mob, recorder, recording_sessions
):
    add(mob, "alice", labels={"who": "alice"})
    add(mob, "bob", labels={"who": "bob"})
    recording_sessions.fail_for.add("alice")
    hook_recorder.refuse.add("bob")
    recorder.clear()
    for key in ("alice", "bob"):
        with pytest.raises(Conflict):
            services.identity_materialize(identity=services.identity_get(mob=mob, key=key))
    errors = [c for c in recorder if c[0] == "on_error"]
    assert [(c[1], c[2]) for c in errors] == [
        ("identity_materialization_failure", "alice"),
        ("identity_materialization_failure", "bob"),
    ]
    assert "embodiment failed for alice" in errors[0][3] and "refused by before_create" in errors[1][3]
    assert "post_spawn" not in [c[0] for c in recorder]
    assert {services.identity_get(mob=mob, key=k).state for k in ("alice", "bob")} == {"broken"}


def test_a_failing_best_effort_hook_does_not_fail_the_spawn(mob, settings, recording_sessions):
    settings.LASHOPS_MOB_HOOKS = {"post_spawn": [HOOKS + "broken_post_spawn"]}
    assert services.identity_materialize(identity=add(mob, "alice")).state == "active"


def test_capacity_refusal_fires_on_error_as_a_spawn_failure(workspace, recorder, recording_sessions):
    from tests.support.mobs import MOB_TOML

    mob = services.mob_load(workspace=workspace, source=MOB_TOML + "\n[limits]\nmax_sessions = 1\n").mob
    services.identity_materialize(identity=add(mob, "a", labels={"who": "a"}))
    with pytest.raises(Conflict):
        services.identity_materialize(identity=add(mob, "b", labels={"who": "b"}))
    assert recorder[-1] == ("on_error", "spawn_failure", "b", "Max sessions reached (1/1)")
