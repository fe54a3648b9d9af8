"""The loopback vendor server run standalone, as a separate OS process (as crash tests use it)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lashops.runtime.providers import ProviderError
from lashops.runtime.providers.openai_compat import build
from lashops.runtime.types import Message, ModelRequest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standalone_server(tmp_path: Path) -> Iterator[str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"responses": [{"text": ["one"]}], "default": {"text": ["again"]}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.vendor_servers", "--port", "0", "--script", str(script)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=5)


def test_standalone_server_prints_its_port_serves_the_script_and_counts_calls(standalone_server):
    provider = build(env={"OPENAI_BASE_URL": f"{standalone_server}/v1"})
    request = ModelRequest(model="m", messages=(Message(role="user", content="hi"),), parameters={"timeout": 5})

    texts = [provider.complete(request, on_text_delta=lambda _: None).text for _ in range(3)]

    assert texts == ["one", "again", "again"]  # the script, then its default
    stats = httpx.get(f"{standalone_server}/_stats", timeout=5).json()
    assert stats == {"requests": 3, "by_path": {"/v1/chat/completions": 3}, "remaining": 0}
    recorded = httpx.get(f"{standalone_server}/_requests", timeout=5).json()
    assert [r["body"]["messages"] for r in recorded] == [[{"role": "user", "content": "hi"}]] * 3


def test_responses_can_be_appended_to_a_running_standalone_server(standalone_server):
    httpx.post(f"{standalone_server}/_script", json={"responses": [{"status": 429}]}, timeout=5)
    provider = build(env={"OPENAI_BASE_URL": f"{standalone_server}/v1"})
    request = ModelRequest(model="m", messages=(Message(role="user", content="hi"),), parameters={"timeout": 5})

    first = provider.complete(request, on_text_delta=lambda _: None)

    assert first.text == "one"  # appended after what the script file already held
    with pytest.raises(ProviderError) as caught:
        provider.complete(request, on_text_delta=lambda _: None)
    assert caught.value.status == 429
