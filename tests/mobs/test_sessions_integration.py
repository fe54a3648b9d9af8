"""Members are real sessions_app sessions: a send reaches the member's session as queued input
and the scripted model answers it; the demo seeds idempotently."""

import time

import pytest

from mobs_app.models import ConsoleFrame, Continuity, Identity

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_demo_mob_answers_a_message_with_the_scripted_model(workspace, settings):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "mobs_app.members:SessionsAppMemberSessions"
    from mobs_app.demo import seed
    from sessions_app.models import Turn

    seed(workspace=workspace)
    seed(workspace=workspace)  # idempotent
    assert ConsoleFrame.objects.filter(kind="send").count() == 1
    # delivered, then completed once the member's answer is on the console
    assert _wait(lambda: ConsoleFrame.objects.filter(kind="send", status__in=["delivered", "completed"]).exists())
    dispatcher = Identity.objects.get(key="dispatcher")
    session_id = Continuity.objects.get(pk=dispatcher.pk).session_id
    assert _wait(lambda: Turn.objects.filter(session_id=session_id, status="committed").exists())
    turn = Turn.objects.get(session_id=session_id, status="committed")
    assert turn.final_text == "You said: Hello team, who handles refunds?"
    assert _wait(lambda: ConsoleFrame.objects.filter(kind="reply", identity="dispatcher").exists())
    assert ConsoleFrame.objects.get(kind="reply").payload["text"] == turn.final_text
    assert _wait(lambda: ConsoleFrame.objects.filter(kind="send", status="completed").exists())
    assert Identity.objects.filter(key__in=["billing", "tech"], state="dormant").count() == 2
    from mobs_app.models import Edge

    assert {(e.a, e.b) for e in Edge.objects.all()} == {
        ("billing", "dispatcher"),
        ("dispatcher", "tech"),
        ("billing", "tech"),
    }
