import pytest

from sessions_app.services import session_open


def scripted(*steps: dict, **parameters) -> dict:
    return {"provider": "scripted", "model": "scripted-1", "parameters": {"script": list(steps), **parameters}}


CALC = {"text": "Computing.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]}
ANSWER = {"text": "It is 42.", "usage": {"input_tokens": 100, "output_tokens": 20}}


@pytest.fixture
def open_session(workspace):
    def make(*steps: dict, session_id: str = "s1", **parameters):
        session, _ = session_open(workspace=workspace, session_id=session_id, model=scripted(*steps, **parameters))
        return session

    return make
