"""A session on a real SDK end to end (the ``openai`` provider against the loopback vendor
server), the JSONL trace it leaves, and the system checks that refuse incoherent settings."""

import json

import pytest
from django.core.checks import Error, run_checks

from sessions_app.checks import runtime_configuration
from sessions_app.models import Node, UsageRecord
from sessions_app.selectors import transcript
from sessions_app.services import session_open, turn_start
from tests.support.vendor_servers import OPENAI_PATH, VendorServer

# Deliberately not "sk-..." shaped: the trace must never contain it at all, not merely redact it.
API_KEY = "loopback-key-5f0c2a9e71d34b86"

TOOL_STEP = {
    "text": ["Let me ", "compute that."],
    "tool_calls": [{"id": "call_a", "name": "calculator", "arguments": ['{"expres', 'sion": "6 * 7"}']}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 15, "prompt_tokens_details": {"cached_tokens": 20}},
}
ANSWER_STEP = {
    "text": ["It is ", "42."],
    "usage": {"prompt_tokens": 160, "completion_tokens": 6, "completion_tokens_details": {"reasoning_tokens": 2}},
}


@pytest.fixture
def vendor(monkeypatch):
    with VendorServer([TOOL_STEP, ANSWER_STEP]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        yield server


@pytest.fixture
def traced_turn(vendor, workspace, settings, tmp_path):
    settings.LASHOPS_TRACE_FILE = str(tmp_path / "trace.jsonl")
    settings.LASHOPS_PROVIDER_TIMEOUT = 10.0
    session, _ = session_open(
        workspace=workspace,
        session_id="real",
        model={"provider": "openai", "model": "gpt-loopback", "parameters": {}},
        system_prompt="Be brief.",
    )
    turn = turn_start(session=session, text="What is 6*7?")
    session.refresh_from_db()
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    return session, turn, lines


@pytest.mark.django_db(transaction=True)
def test_a_streamed_tool_turn_on_the_openai_sdk_commits_the_right_transcript(traced_turn):
    session, turn, _ = traced_turn
    assert (turn.outcome, turn.final_text, turn.steps) == ("finished", "It is 42.", 2)
    nodes = transcript(session=session)
    assert [n.kind for n in nodes] == ["user", "assistant", "tool_call", "tool_result", "assistant"]
    assert nodes[1].payload["text"] == "Let me compute that."
    call = nodes[2].payload
    assert (call["call_id"], call["name"], json.loads(call["arguments"])) == (
        "call_a",
        "calculator",
        {"expression": "6 * 7"},
    )
    assert nodes[3].payload["content"] == "42" and nodes[3].payload["is_error"] is False
    assert nodes[4].payload["text"] == "It is 42."
    assert Node.objects.filter(session=session).count() == 5


@pytest.mark.django_db(transaction=True)
def test_vendor_usage_lands_in_our_buckets_per_call_and_per_turn(traced_turn):
    session, turn, _ = traced_turn
    rows = list(UsageRecord.objects.filter(turn=turn).order_by("step"))
    assert [(r.provider, r.model, r.step) for r in rows] == [
        ("openai", "gpt-loopback", 0),
        ("openai", "gpt-loopback", 1),
    ]
    assert (rows[0].input_tokens, rows[0].cache_read_input_tokens, rows[0].output_tokens) == (100, 20, 15)
    assert (rows[1].input_tokens, rows[1].output_tokens, rows[1].reasoning_output_tokens) == (160, 6, 2)
    assert (turn.input_tokens, turn.cache_read_input_tokens, turn.output_tokens) == (260, 20, 21)
    assert turn.reasoning_output_tokens == 2 and session.input_tokens == 260


@pytest.mark.django_db(transaction=True)
def test_the_vendor_received_the_tool_result_in_the_second_request(traced_turn, vendor):
    requests = vendor.requests_to(OPENAI_PATH)
    assert len(requests) == 2
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in requests)
    first, second = (r.body for r in requests)
    assert first["stream"] is True and first["model"] == "gpt-loopback"
    assert "calculator" in [t["function"]["name"] for t in first["tools"]]
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == "call_a"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"expression": "6 * 7"}
    tool = next(m for m in second["messages"] if m["role"] == "tool")
    assert (tool["tool_call_id"], tool["content"]) == ("call_a", "42")


@pytest.mark.django_db(transaction=True)
def test_the_trace_file_has_every_kind_of_event_and_never_the_api_key(traced_turn):
    _, turn, lines = traced_turn
    assert API_KEY not in "\n".join(lines)
    events = [json.loads(line) for line in lines]
    types = [e["type"] for e in events]
    assert types[0] == "session_started"
    for expected in (
        "turn_started",
        "prompt_built",
        "llm_call_started",
        "llm_call_completed",
        "tool_call_started",
        "tool_call_completed",
        "token_usage",
        "turn_completed",
    ):
        assert expected in types, expected
    assert types.count("llm_call_completed") == 2
    assert all(e["session_id"] == "real" and "ts" in e for e in events)
    assert all(e["turn_id"] == turn.pk for e in events if e["type"] != "session_started")
    tool = next(e for e in events if e["type"] == "tool_call_completed")
    assert tool["name"] == "calculator" and tool["call_id"] == "call_a"


# --- system checks -----------------------------------------------------------------------


def _ids(settings_overrides, settings) -> list[str]:
    for name, value in settings_overrides.items():
        setattr(settings, name, value)
    return [message.id for message in runtime_configuration()]


def test_the_default_configuration_passes_the_checks(settings):
    assert [m for m in run_checks(tags=["lashops"]) if m.level >= Error.level] == []


@pytest.mark.parametrize("value", ["", "scripted", "scripted:"])
def test_a_missing_default_model_is_e003(settings, value):
    assert _ids({"LASHOPS_DEFAULT_MODEL": value}, settings) == ["lashops.E003"]


def test_an_unknown_default_provider_is_e004(settings):
    settings.LASHOPS_DEFAULT_MODEL = "nope:gpt"
    [message] = run_checks(tags=["lashops"])  # registered, not only callable
    assert message.id == "lashops.E004" and "'nope'" in message.msg


def test_tool_providers_that_cannot_load_are_e005(settings):
    assert _ids({"LASHOPS_TOOL_PROVIDERS": ["no_such_module.tools:builtin"]}, settings) == ["lashops.E005"]


def test_plugins_that_cannot_load_are_e006(settings):
    assert _ids({"LASHOPS_PLUGINS": ["lashops.runtime.plugins:no_such_factory"]}, settings) == ["lashops.E006"]


def test_durable_sessions_with_in_memory_attachments_are_e007(settings):
    storages = {**settings.STORAGES, "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    assert _ids({"STORAGES": storages}, settings) == ["lashops.E007"]


def test_several_problems_are_reported_together(settings):
    ids = _ids({"LASHOPS_DEFAULT_MODEL": "nope:x", "LASHOPS_PLUGINS": ["missing.mod:f"]}, settings)
    assert sorted(ids) == ["lashops.E004", "lashops.E006"]


def test_celery_without_a_shared_channel_layer_is_w001(settings):
    assert _ids({"LASHOPS_RUNNER": "celery", "REDIS_URL": None}, settings) == ["lashops.W001"]
