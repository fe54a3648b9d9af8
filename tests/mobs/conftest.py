import pytest

from tests.mobs import fakes
from tests.support.mobs import MOB_TOML


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
