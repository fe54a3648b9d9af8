"""Failure tests on real PostgreSQL with real OS processes: kill -9 mid-turn and re-drive; two
processes racing for one session."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.db import transaction

from lashops.core.models import Effect, Lease
from sessions_app import services
from sessions_app.models import Session, Turn
from tests.support.polling import wait_until
from tests.support.vendor_servers import VendorServer
from tests.workers import ROOT, current_database_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOOLS = "lashops.runtime.builtin_tools:builtin_tools,tests.sessions.counting_tools:tools"


def _tally_call(path: str) -> dict:
    return {"tool_calls": [{"id": "call_1", "name": "tally", "arguments": json.dumps({"file": path})}]}


def _env(server: VendorServer, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=current_database_url(),
        OPENAI_BASE_URL=server.openai_base_url,
        OPENAI_API_KEY="sk-test-key",
        LASHOPS_TOOL_PROVIDERS=TOOLS,
        LASHOPS_SESSION_LEASE_TTL="10",
        LASHOPS_TESTING="1",
        **extra,
    )
    env.pop("CELERY_BROKER_URL", None)
    return env


def _drive(turn_id: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "lashops_turn", "drive", turn_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _admit(workspace, session_id: str, text: str) -> Turn:
    session, _ = services.session_open(
        workspace=workspace, session_id=session_id, model={"provider": "openai", "model": "gpt-test"}
    )
    with transaction.atomic():
        return services._admit(session, text=text, source_key="", background=True)


def _transcript(session_id: str) -> list[tuple[str, dict]]:
    session = Session.objects.get(pk=session_id)
    shape = []
    for node in services._transcript(session):
        payload = {k: v for k, v in node["payload"].items() if k not in {"model"}}
        shape.append((node["kind"], payload))
    return shape


def test_killed_driver_is_redriven_without_repeating_completed_effects(workspace, tmp_path):
    tally = str(tmp_path / "tally.txt")
    script = [_tally_call(tally), {"delay": 60, "text": "never sent"}, {"text": ["all ", "done"]}]
    with VendorServer(script) as server:
        turn = _admit(workspace, "crashy", "count once")
        env = _env(server)
        first = _drive(turn.pk, env)
        # The model call of step 0 and the tool attempt are journaled; step 1's model call hangs.
        wait_until(lambda: Effect.objects.filter(scope=turn.scope, kind="tool_attempt").exists(), timeout=30)
        wait_until(lambda: server.stats()["requests"] == 2, timeout=30)
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL  # it really died
        assert Turn.objects.get(pk=turn.pk).status == "running"  # nothing committed

        # While the dead driver's lease lasts, a second driver is fenced out.
        early = _drive(turn.pk, env)
        out, _ = early.communicate(timeout=60)
        assert early.returncode != 0 and "session_execution_busy" in out
        lease = Lease.objects.get(scope="session", key="crashy")
        time.sleep(max(0.0, (lease.expires_at.timestamp() - time.time())) + 0.2)

        second = _drive(turn.pk, env)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0, out
        requests = server.requests_to("/v1/chat/completions")

    turn.refresh_from_db()
    assert (turn.status, turn.outcome, turn.final_text) == ("committed", "finished", "all done")
    # Step 0 went to the model once (no tool result in its prompt), the tool ran once.
    step0 = [r for r in requests if not any(m.get("role") == "tool" for m in r.body["messages"])]
    assert len(step0) == 1
    with open(tally) as handle:
        assert handle.read().splitlines() == ["call_1"]
    assert len(requests) == 3  # step 0, the killed step-1 attempt, the re-driven step 1

    with VendorServer([_tally_call(str(tmp_path / "other.txt")), {"text": ["all ", "done"]}]) as server:
        clean = _admit(workspace, "clean", "count once")
        done = _drive(clean.pk, _env(server))
        assert done.wait(timeout=60) == 0
    expected = [(k, p if k != "tool_call" else {**p, "arguments": "?"}) for k, p in _transcript("clean")]
    actual = [(k, p if k != "tool_call" else {**p, "arguments": "?"}) for k, p in _transcript("crashy")]
    assert actual == expected


def test_two_processes_starting_a_turn_on_one_session_one_runs_one_is_busy(workspace, tmp_path):
    services.session_open(workspace=workspace, session_id="race", model={"provider": "openai", "model": "gpt-test"})
    code = (
        "import django, sys; django.setup()\n"
        "from lashops.core.errors import LashOpsError\n"
        "from sessions_app import services\n"
        "from sessions_app.models import Session\n"
        "try:\n"
        "    t = services.turn_start(session=Session.objects.get(pk='race'), text=sys.argv[1])\n"
        "    print('RAN', t.outcome)\n"
        "except LashOpsError as e:\n"
        "    print('ERR', e.code)\n"
    )
    with VendorServer([{"text": "one", "delay": 1.0}, {"text": "two", "delay": 1.0}]) as server:
        env = _env(server, DJANGO_SETTINGS_MODULE="lashops.settings")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, f"hello {i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
            )
            for i in range(2)
        ]
        outs = sorted(p.communicate(timeout=60)[0].strip().splitlines()[-1] for p in procs)
    assert outs == ["ERR session_execution_busy", "RAN finished"]
    assert Turn.objects.filter(session_id="race").count() == 1
