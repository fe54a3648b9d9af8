"""Peer messaging: a member's turn messages a wired peer (the peer's session gets it as queued
input, the console records it); topology gates it; ``member::mob`` goes through the contacts."""

import pytest

from mobs_app import services
from mobs_app.contacts import parse_address, parse_transport
from mobs_app.errors import Conflict, InvalidInput, NotFound, TopologyDenied, UnknownIdentity
from mobs_app.messaging import peer_send
from mobs_app.models import ConsoleFrame, Contact, MobEvent
from tests.support.mobs import MOB_TOML, add

RULES = '\n[topology]\nmode = "{mode}"\nrules = [{{ from_role = "lead", to_role = "specialist", allowed = true }}]\n'


def _post(api, path, body):
    return api.post(path, data=body, content_type="application/json")


@pytest.mark.django_db(transaction=True)
def test_a_members_scripted_turn_messages_its_peer_who_answers_in_its_own_session(api, workspace, settings):
    from sessions_app.models import Turn
    from sessions_app.services import session_open
    from tests.support.polling import wait_until
    from tests.support.scripted import scripted

    settings.LASHOPS_MOB_MEMBER_SESSIONS = "mobs_app.members:SessionsAppMemberSessions"
    _post(api, "/api/mobs", {"toml": MOB_TOML})
    _post(api, "/api/mobs/desk/identities", {"key": "lead-1", "profile": "lead"})
    _post(api, "/api/mobs/desk/identities", {"key": "alice", "profile": "specialist"})
    lead_session = _post(api, "/api/mobs/desk/identities/lead-1/materialize", {}).json()["session_id"]
    hand_off = {"tool_calls": [{"name": "mob_send_message", "arguments": {"to": "alice", "text": "check refunds"}}]}
    session_open(workspace=workspace, session_id=lead_session, model=scripted(hand_off, {"text": "handed off"}))

    assert _post(api, "/api/mobs/desk/identities/lead-1/send", {"text": "route this"}).status_code == 202
    peer_frame = wait_until(
        lambda: ConsoleFrame.objects.filter(
            kind="peer_message",
            identity="alice",
            status__in=["delivered", "completed"],  # completed once answered
        ).first(),
        timeout=30,
    )
    assert peer_frame.payload["from"] == "lead-1" and peer_frame.payload["origin"] == "peer:lead-1"
    answered = wait_until(
        lambda: Turn.objects.filter(session_id=peer_frame.session_id, status="committed").first(), timeout=30
    )
    assert answered.final_text == "You said: [message from peer lead-1] check refunds"
    lead_turn = Turn.objects.get(session_id=lead_session, status="committed")
    assert lead_turn.final_text == "handed off"
    frames = wait_until(lambda: _with_replies(api, 2), timeout=30)
    assert [(f["kind"], f["identity"]) for f in frames if f["kind"] != "reply"] == [
        ("send", "lead-1"),
        ("peer_message", "alice"),
    ]
    replies = {f["identity"]: f["payload"]["text"] for f in frames if f["kind"] == "reply"}
    assert replies == {"lead-1": "handed off", "alice": answered.final_text}  # members' answers on the console


def _with_replies(api, count: int) -> list[dict] | None:
    frames = api.get("/api/mobs/desk/console").json()["frames"]
    return frames if len([f for f in frames if f["kind"] == "reply"]) >= count else None


@pytest.mark.django_db
def test_strict_topology_refuses_and_advisory_records_a_violation(workspace, api):
    strict = services.mob_load(workspace=workspace, source=MOB_TOML + RULES.format(mode="strict")).mob
    lead, alice, bob = add(strict, "lead-1", profile="lead"), add(strict, "alice"), add(strict, "bob")

    assert peer_send(sender=lead, to="alice", text="allowed by a rule")["accepted"]
    with pytest.raises(TopologyDenied):  # wired, but no rule allows specialist -> lead
        peer_send(sender=alice, to="lead-1", text="denied")
    with pytest.raises(Conflict) as unwired:  # two specialists are not wired: refused in any mode
        peer_send(sender=alice, to="bob", text="not wired")
    assert unwired.value.code == "not_wired"
    assert [e.data["allowed"] for e in MobEvent.objects.filter(mob=strict, kind="topology_violation")] == [False]
    assert not ConsoleFrame.objects.filter(mob=strict, payload__text__in=["denied", "not wired"]).exists()
    assert bob.state == "dormant"

    advisory = services.mob_load(workspace=workspace, source=MOB_TOML + RULES.format(mode="advisory")).mob
    assert advisory.pk == strict.pk  # the same mob, a new revision
    accepted = peer_send(sender=services.identity_get(mob=advisory, key="alice"), to="lead-1", text="let through")
    assert accepted["accepted"] and accepted["identity"] == "lead-1"
    violations = api.get("/api/mobs/desk/events").json()["events"]
    assert [e["data"]["allowed"] for e in violations if e["kind"] == "topology_violation"] == [False, True]


@pytest.mark.django_db
def test_cross_mob_address_goes_through_the_contact_directory(workspace, mob):
    other = services.mob_load(workspace=workspace, source=MOB_TOML.replace('id = "desk"', 'id = "other"')).mob
    add(other, "carol")
    add(other, "ops", addressability="internal_only")
    lead = add(mob, "lead-1", profile="lead")

    with pytest.raises(NotFound) as unknown:
        peer_send(sender=lead, to="carol::other", text="hi")
    assert unknown.value.code == "unknown_contact"
    Contact.objects.create(workspace=workspace, mob_ref="other", transport="inproc")
    accepted = peer_send(sender=lead, to="carol::other", text="hi")
    frame = ConsoleFrame.objects.get(mob=other, seq=int(accepted["cursor"].split(":")[1]))
    assert (frame.identity, frame.payload["from"], frame.payload["from_mob"]) == ("carol", "lead-1", "desk")
    with pytest.raises(Conflict) as internal:
        peer_send(sender=lead, to="ops::other", text="hi")
    assert internal.value.code == "not_addressable"

    Contact.objects.create(workspace=workspace, mob_ref="far", transport="tcp://10.0.0.7:7400")
    with pytest.raises(Conflict) as remote:
        peer_send(sender=lead, to="someone::far", text="hi")
    assert remote.value.code == "transport_unsupported"
    assert "tcp://10.0.0.7:7400" in remote.value.message and "only inproc" in remote.value.message


def test_transports_and_addresses_parse_like_the_contact_directory():
    assert parse_transport("inproc") == ("inproc", "")
    assert parse_transport("tcp://host:7400") == ("tcp", "host:7400")
    assert parse_transport("uds:///run/mob.sock") == ("uds", "/run/mob.sock")
    for bad in ("http://host:80", "tcp://host", "tcp://host:0", "uds://relative", ""):
        with pytest.raises(InvalidInput):
            parse_transport(bad)
    assert parse_address("a::mob") == ("a", "mob")
    assert parse_address("personal:x@y.com") == ("personal:x@y.com", None)  # one ':' is part of the key
    with pytest.raises(InvalidInput):
        parse_address("::mob")


@pytest.mark.django_db
def test_an_email_like_member_key_is_not_read_as_a_cross_mob_address(mob):
    lead = add(mob, "lead-1", profile="lead")
    with pytest.raises(UnknownIdentity):
        peer_send(sender=lead, to="personal:x@y.com", text="hi")
