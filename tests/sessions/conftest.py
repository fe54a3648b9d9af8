import time

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


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
