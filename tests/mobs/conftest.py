import pytest

from tests.mobs import fakes

MOB_TOML = """
[mob]
id = "desk"
orchestrator = "lead"

[profiles.lead]
model = "scripted"
provider = "scripted"
peer_description = "Routes work"
[profiles.lead.tools]
comms = true
builtins = true

[profiles.specialist]
model = "scripted"
peer_description = "Answers one area"
[profiles.specialist.tools]
comms = true
shell = true

[profiles.mute]
model = "scripted"

[wiring]
auto_wire_orchestrator = true
"""


@pytest.fixture(autouse=True)
def recording_sessions(settings):
    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:RecordingMemberSessions"
    fakes.reset()
    yield fakes
    fakes.reset()


@pytest.fixture
def mob(workspace):
    from mobs_app.services import mob_load

    return mob_load(workspace=workspace, source=MOB_TOML).mob


def add(mob, key, profile="specialist", **extra):
    from mobs_app.services import identity_create

    return identity_create(mob=mob, spec={"key": key, "profile": profile, **extra})
