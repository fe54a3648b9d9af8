"""Session admin: every changelist and change page renders for a superuser, the turn page shows
its effect journal, prices are editable, and the actions call services and report."""

from decimal import Decimal

import pytest
from django.contrib.messages import get_messages

from sessions_app.models import (
    Attachment,
    ModelPrice,
    PendingInput,
    Session,
    SessionAttachment,
    SessionCommand,
    Turn,
    UsageRecord,
)
from sessions_app.services import attachment_put, input_enqueue, turn_start
from tests.support.scripted import ANSWER, CALC

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    # An unusable password: no hashing, so the fixture stays cheap.
    client.force_login(django_user_model.objects.create_superuser("root", password=None))
    return client


@pytest.fixture
def settled(open_session, settings, tmp_path):
    """A session with a committed one-tool turn, queued input, a price and an attachment."""
    settings.MEDIA_ROOT = str(tmp_path)
    session = open_session(CALC, ANSWER)
    turn = turn_start(session=session, text="What is 6*7?")
    Session.objects.filter(pk=session.pk).update(active_turn_id="busy")  # so the input stays queued
    input_enqueue(session=session, text="later", source_key="p1")
    Session.objects.filter(pk=session.pk).update(active_turn_id="")
    ModelPrice.objects.create(provider="scripted", model="scripted-1", input_per_mtok=3, output_per_mtok=15)
    attachment_put(session=session, content=b"hello", content_type="text/plain", filename="hello.txt")
    session.refresh_from_db()
    return session, turn


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize(
    "model", ["session", "turn", "pendinginput", "sessioncommand", "usagerecord", "modelprice", "attachment"]
)
def test_changelists_render(staff, settled, model):
    response = staff.get(f"/admin/sessions_app/{model}/")
    assert response.status_code == 200


def test_session_change_page_shows_the_settled_transcript(staff, settled):
    session, _ = settled
    page = staff.get(f"/admin/sessions_app/session/{session.pk}/change/")
    assert page.status_code == 200
    assert b"Transcript (settled)" in page.content and b"It is 42." in page.content


def test_turn_change_page_shows_the_effect_journal(staff, settled):
    _, turn = settled
    page = staff.get(f"/admin/sessions_app/turn/{turn.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Effect journal (read-only)" in text
    assert f"turn:s1:{turn.pk}/0/llm_call/attempt-1" in text
    assert f"turn:s1:{turn.pk}/0/tool_attempt/call_0_0" in text


def test_other_change_pages_render(staff, settled):
    session, turn = settled
    pending = PendingInput.objects.get(source_key="p1")
    attachment = Attachment.objects.get()
    price = ModelPrice.objects.get()
    usage = UsageRecord.objects.filter(turn=turn).first()
    for url in (
        f"/admin/sessions_app/pendinginput/{pending.pk}/change/",
        f"/admin/sessions_app/modelprice/{price.pk}/change/",
        f"/admin/sessions_app/usagerecord/{usage.pk}/change/",
        f"/admin/sessions_app/attachment/{attachment.pk}/change/",
    ):
        page = staff.get(url)
        assert page.status_code == 200, url
    holders = staff.get(f"/admin/sessions_app/attachment/{attachment.pk}/change/").content.decode()
    assert "hello.txt" in holders and session.pk in holders


def test_model_prices_are_editable_from_the_changelist(staff, settled):
    price = ModelPrice.objects.get()
    response = staff.post(
        "/admin/sessions_app/modelprice/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(price.pk),
            "form-0-input_per_mtok": "2.5",
            "form-0-output_per_mtok": "10",
            "form-0-cache_read_per_mtok": "0.25",
            "form-0-cache_write_per_mtok": "3",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    price.refresh_from_db()
    assert (price.input_per_mtok, price.cache_read_per_mtok) == (Decimal("2.5"), Decimal("0.25"))


def test_model_price_can_be_added(staff, db):
    response = staff.post(
        "/admin/sessions_app/modelprice/add/",
        {
            "provider": "openai",
            "model": "gpt-x",
            "input_per_mtok": "1",
            "output_per_mtok": "2",
            "cache_read_per_mtok": "0",
            "cache_write_per_mtok": "0",
        },
    )
    assert response.status_code == 302
    assert ModelPrice.objects.get(provider="openai").output_per_mtok == Decimal(2)


def _action(staff, model: str, action: str, pks: list) -> list[str]:
    response = staff.post(f"/admin/sessions_app/{model}/", {"action": action, "_selected_action": pks})
    assert response.status_code == 302
    return _messages(response)


def test_cancel_turn_action_requests_cancellation_and_reports(staff, open_session):
    session = open_session({"text": "slow"})
    turn = turn_start(session=session, text="hi", background=True)  # admitted; no commit, so never driven here
    assert _action(staff, "turn", "cancel_turns", [turn.pk]) == ["Cancel requested."]
    assert Turn.objects.get(pk=turn.pk).cancel_requested_at is not None


def test_cancel_turn_action_reports_a_committed_turn(staff, settled):
    _, turn = settled
    messages = _action(staff, "turn", "cancel_turns", [turn.pk])
    assert any("already committed" in m for m in messages)
    assert Turn.objects.get(pk=turn.pk).cancel_requested_at is None


def test_session_cancel_action_cancels_the_running_turn(staff, open_session):
    session = open_session({"text": "slow"})
    turn = turn_start(session=session, text="hi", background=True)
    [message] = _action(staff, "session", "cancel_active_turn", [session.pk])
    assert message == f"Cancel requested for turn {turn} of {session.pk}."
    assert Turn.objects.get(pk=turn.pk).cancel_requested_at is not None


def test_reset_action_clears_the_transcript_and_reports(staff, settled):
    session, _ = settled
    [message] = _action(staff, "session", "reset_session", [session.pk])
    assert message == f"{session.pk}: reset applied."
    session.refresh_from_db()
    assert session.leaf_node_id == "" and session.head_revision == 2
    assert SessionCommand.objects.get(session=session).reason == "admin action"


def test_delete_with_report_action_deletes_and_reports(staff, settled):
    session, _ = settled
    [message] = _action(staff, "session", "delete_with_report", [session.pk])
    assert message.startswith(f"Deleted {session.pk}: ") and "'turns': 1" in message and "'nodes': 5" in message
    assert not Session.objects.filter(pk=session.pk).exists()
    assert not SessionAttachment.objects.exists()


def test_delete_with_report_action_refuses_a_busy_session(staff, open_session):
    session = open_session({"text": "slow"})
    turn_start(session=session, text="hi", background=True)
    [message] = _action(staff, "session", "delete_with_report", [session.pk])
    assert "cancel the running turn" in message
    assert Session.objects.filter(pk=session.pk).exists()


# --- safe by construction (issue 10, item 6) -------------------------------------------------


def test_session_identity_and_state_cannot_be_changed_from_the_change_form(staff, settled, other_workspace):
    session, _ = settled
    before = Session.objects.filter(pk=session.pk).values().get()
    other, _ = session_open_in(other_workspace)
    response = staff.post(
        f"/admin/sessions_app/session/{session.pk}/change/",
        {
            "id": "s1-copy",
            "workspace": other_workspace.pk,
            "status": "closed",
            "mode": "standard",
            "model": '{"provider": "scripted", "model": "other"}',
            "parent": other.pk,
            "system_prompt": "be brief",
            "metadata": '{"team": "ops"}',
            "prompt_layers": "[]",
            **_management_forms(staff, f"/admin/sessions_app/session/{session.pk}/change/"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    after = Session.objects.filter(pk=session.pk).values().get()
    assert not Session.objects.filter(pk="s1-copy").exists()
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"system_prompt", "metadata", "updated_at"}
    assert (after["system_prompt"], after["metadata"]) == ("be brief", {"team": "ops"})


def session_open_in(workspace):
    from sessions_app.services import session_open
    from tests.support.scripted import scripted

    return session_open(workspace=workspace, session_id="s-other", model=scripted(ANSWER))


def test_session_delete_button_goes_through_the_delete_service(staff, settled):
    session, _ = settled
    response = staff.post(f"/admin/sessions_app/session/{session.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    [report] = [m for m in _messages(response) if m.startswith(f"Deleted {session.pk}: ")]
    assert "'turns': 1" in report and "'nodes': 5" in report
    assert not Session.objects.filter(pk=session.pk).exists()
    assert not SessionAttachment.objects.exists()


def test_session_delete_button_refuses_a_busy_session_with_the_services_reason(staff, open_session):
    session = open_session({"text": "slow"})
    turn_start(session=session, text="hi", background=True)
    response = staff.post(f"/admin/sessions_app/session/{session.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and response["Location"].endswith(f"/session/{session.pk}/change/")
    assert any("cancel the running turn" in m for m in _messages(response))
    assert Session.objects.filter(pk=session.pk).exists()


def test_delete_selected_on_sessions_goes_through_the_delete_service(staff, open_session):
    idle = open_session(ANSWER)
    busy = open_session({"text": "slow"}, session_id="s2")
    turn_start(session=busy, text="hi", background=True)
    response = staff.post(
        "/admin/sessions_app/session/",
        {"action": "delete_selected", "_selected_action": [idle.pk, busy.pk], "post": "yes"},
    )
    assert response.status_code == 302
    messages = _messages(response)
    assert any(m.startswith(f"Deleted {idle.pk}: ") for m in messages)
    assert any("cancel the running turn" in m for m in messages)
    assert list(Session.objects.values_list("pk", flat=True)) == [busy.pk]


def _management_forms(staff, url: str) -> dict[str, str]:
    """The inline management form fields of a change page, as the browser would post them."""
    page = staff.get(url)
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        form = inline.formset.management_form
        data |= {form.add_prefix(name): value for name, value in form.initial.items()}
    return data
