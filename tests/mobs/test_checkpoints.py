"""Continuity checkpoints: a member's committed turn (``sessions_app.signals.turn_committed``)
becomes its checkpoint version; a reset starts a new generation at 0 and fences the old session."""

import pytest

from mobs_app import services
from mobs_app.models import Continuity
from sessions_app.signals import CommittedTurn, turn_committed
from tests.support.mobs import add


def _committed(session_id: str, head_revision: int) -> None:
    turn = CommittedTurn(
        session_id=session_id,
        turn_id="t",
        head_revision=head_revision,
        final_text="",
        source_key="",
        accepted_inputs=(),
        mob="desk",
    )
    turn_committed.send(sender=None, turn=turn)


@pytest.mark.django_db
def test_checkpoint_version_only_moves_forward_within_the_generation(mob):
    ident = services.identity_materialize(identity=add(mob, "alice"))
    session_id = Continuity.objects.get(pk=ident.pk).session_id
    _committed(session_id, 2)
    _committed(session_id, 2)  # a repeated signal is a no-op
    _committed(session_id, 1)  # so is an older one
    _committed("someone-else", 9)  # a session no identity runs is ignored
    assert Continuity.objects.get(pk=ident.pk).checkpoint_version == 2
    services.identity_reset(identity=services.identity_get(mob=mob, key="alice"))
    _committed(session_id, 3)  # the old generation's session is fenced out
    record = Continuity.objects.get(pk=ident.pk)
    assert (record.generation, record.checkpoint_version) == (1, 0) and record.session_id != session_id
    _committed(record.session_id, 1)
    assert Continuity.objects.get(pk=ident.pk).checkpoint_version == 1


@pytest.mark.django_db(transaction=True)
def test_member_turns_bump_the_checkpoint_and_reset_fences_the_old_session(api, settings):
    from tests.support.mobs import MOB_TOML
    from tests.support.polling import wait_until

    settings.LASHOPS_MOB_MEMBER_SESSIONS = "mobs_app.members:SessionsAppMemberSessions"
    post = lambda path, body: api.post(path, data=body, content_type="application/json")  # noqa: E731
    post("/api/mobs", {"toml": MOB_TOML})
    post("/api/mobs/desk/identities", {"key": "alice", "profile": "specialist"})

    assert post("/api/mobs/desk/identities/alice/send", {"text": "hello"}).status_code == 202
    detail = lambda: api.get("/api/mobs/desk/identities/alice").json()  # noqa: E731
    first = wait_until(
        lambda: detail()["continuity"] if (detail()["continuity"] or {}).get("checkpoint_version") else None
    )
    assert (first["generation"], first["checkpoint_version"]) == (0, 1)

    reset = post("/api/mobs/desk/identities/alice/reset", {}).json()["continuity"]
    assert (reset["generation"], reset["checkpoint_version"]) == (1, 0)
    assert reset["session_id"] != first["session_id"]
    late = post(f"/api/sessions/{first['session_id']}/turns", {"input": "late write"})
    assert late.status_code == 200 and late.json()["status"] == "committed"
    assert detail()["continuity"] == reset  # the old session's commit did not touch continuity

    post("/api/mobs/desk/identities/alice/send", {"text": "again"})
    after = wait_until(lambda: detail()["continuity"] if detail()["continuity"]["checkpoint_version"] else None)
    assert (after["generation"], after["checkpoint_version"], after["session_id"]) == (1, 1, reset["session_id"])
    events = api.get("/api/mobs/desk/events").json()["events"]
    assert "member_reset" in [e["kind"] for e in events]
