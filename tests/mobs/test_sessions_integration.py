"""Members are real sessions_app sessions: a send reaches the member's session as queued input
and the scripted model answers it; the demo seeds idempotently."""

import pytest

from mobs_app.models import ConsoleFrame, Continuity, Identity
from tests.support.polling import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo_mob_answers_a_message_with_the_scripted_model(workspace, settings):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "mobs_app.members:SessionsAppMemberSessions"
    from mobs_app.demo import seed
    from sessions_app.models import Turn

    seed(workspace=workspace)
    seed(workspace=workspace)  # idempotent
    assert ConsoleFrame.objects.filter(kind="send").count() == 1
    # delivered, then completed once the member's answer is on the console
    wait_until(
        lambda: ConsoleFrame.objects.filter(kind="send", status__in=["delivered", "completed"]).exists(),
        timeout=30.0,
        interval=0.1,
    )
    dispatcher = Identity.objects.get(key="dispatcher")
    session_id = Continuity.objects.get(pk=dispatcher.pk).session_id
    wait_until(
        lambda: Turn.objects.filter(session_id=session_id, status="committed").exists(), timeout=30.0, interval=0.1
    )
    turn = Turn.objects.get(session_id=session_id, status="committed")
    assert turn.final_text == "You said: Hello team, who handles refunds?"
    wait_until(
        lambda: ConsoleFrame.objects.filter(kind="reply", identity="dispatcher").exists(), timeout=30.0, interval=0.1
    )
    assert ConsoleFrame.objects.get(kind="reply").payload["text"] == turn.final_text
    wait_until(
        lambda: ConsoleFrame.objects.filter(kind="send", status="completed").exists(), timeout=30.0, interval=0.1
    )
    assert Identity.objects.filter(key__in=["billing", "tech"], state="dormant").count() == 2
    from mobs_app.models import Edge

    assert {(e.a, e.b) for e in Edge.objects.all()} == {
        ("billing", "dispatcher"),
        ("dispatcher", "tech"),
        ("billing", "tech"),
    }
