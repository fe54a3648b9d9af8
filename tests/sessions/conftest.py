import pytest

from sessions_app.services import session_open
from tests.support.scripted import scripted


@pytest.fixture
def open_session(workspace):
    def make(*steps: dict, session_id: str = "s1", **parameters):
        session, _ = session_open(workspace=workspace, session_id=session_id, model=scripted(*steps, **parameters))
        return session

    return make
