"""The mob page's state carries each console frame's delivery: attempts and their limit, when the
next attempt is due, the last error, and the frame version the page orders its updates by."""

import pytest

from lashops.core import runner
from mobs_app.messaging import identity_send
from mobs_app.models import ConsoleFrame
from mobs_app.services import identity_create, mob_load
from tests.mobs import fakes
from tests.support.mobs import MOB_TOML


@pytest.fixture
def staff(client, django_user_model, workspace):
    user = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client.force_login(user)
    return client


@pytest.fixture
def flaky(settings):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:FlakyMemberSessions"
    settings.LASHOPS_CONSOLE_DELIVERY_ATTEMPTS = 3
    settings.LASHOPS_CONSOLE_RETRY_BASE_SECONDS = 30.0
    fakes.reset()
    yield fakes
    fakes.reset()


def _frames(staff) -> dict[int, dict]:
    response = staff.get("/ops/mobs/desk/state.json")
    assert response.status_code == 200
    return {f["seq"]: f for f in response.json()["console"]}


@pytest.mark.django_db(transaction=True)
def test_mob_state_shows_a_frame_waiting_for_its_retry_with_attempts_due_time_and_error(staff, workspace, flaky):
    mob = mob_load(workspace=workspace, source=MOB_TOML).mob
    identity_create(mob=mob, spec={"key": "alice", "profile": "specialist"})
    flaky.fail_deliveries(1)
    accepted = identity_send(mob=mob, key="alice", text="hello")
    runner.drain()

    frame = ConsoleFrame.objects.get(pk=accepted["frame_id"])
    shown = _frames(staff)[frame.seq]
    assert shown["status"] == "accepted"
    assert shown["delivery_attempts"] == 1
    assert shown["max_attempts"] == 3
    assert shown["next_attempt_at"] == frame.next_attempt_at.isoformat()
    assert shown["last_error"] == "RuntimeError: member session unavailable"
    assert shown["frame_version"] == frame.frame_version


@pytest.mark.django_db(transaction=True)
def test_mob_state_shows_a_delivered_frame_with_no_next_attempt_and_the_limit(staff, workspace, flaky):
    mob = mob_load(workspace=workspace, source=MOB_TOML).mob
    identity_create(mob=mob, spec={"key": "alice", "profile": "specialist"})
    accepted = identity_send(mob=mob, key="alice", text="hello")
    runner.drain()

    state = staff.get("/ops/mobs/desk/state.json").json()
    shown = {f["seq"]: f for f in state["console"]}[ConsoleFrame.objects.get(pk=accepted["frame_id"]).seq]
    assert (shown["status"], shown["delivery_attempts"], shown["next_attempt_at"], shown["last_error"]) == (
        "delivered",
        1,
        None,
        "",
    )
    assert state["delivery"] == {"max_attempts": 3}
