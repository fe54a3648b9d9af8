"""Background turns on real Celery worker processes while every turn's drive task is delivered
over and over (what a sweep, a re-delivered message and a restarted broker add up to), and one
worker is killed with SIGKILL mid-turn: each turn ends committed exactly once, stays committed,
and its tool ran once."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.db import connections

from lashops.core.models import Effect, Event, Lease
from sessions_app import services
from sessions_app.models import Session, Turn, UsageRecord
from sessions_app.tasks import drive_turn_task
from tests.support.scripted import scripted
from tests.workers import WorkerProcess, celery_app_on

pytestmark = [pytest.mark.postgres, pytest.mark.celery, pytest.mark.django_db(transaction=True)]

TOOLS = "lashops.runtime.builtin_tools:builtin_tools,tests.sessions.counting_tools:tools"
TURNS = 8
COPIES = 3  # extra deliveries of each unfinished turn's drive task per round


def _script(tally: Path) -> dict:
    # Step 0 waits before its tool call, so a turn a worker has just taken is never in the middle
    # of its tool when the kill lands; step 1 is where the killed worker's turns are.
    return scripted(
        {"delay": 0.3, "text": "Counting.", "tool_calls": [{"name": "tally", "arguments": {"file": str(tally)}}]},
        {"delay": 1.0, "text": "Counted once."},
    )


def _held_by(worker: WorkerProcess) -> list[str]:
    """Session keys whose live lease a pool process of ``worker`` holds (holder is host:pid:nonce)."""
    held = []
    for key, holder in Lease.objects.filter(scope="session").exclude(holder="").values_list("key", "holder"):
        try:
            if os.getpgid(int(holder.split(":")[1])) == worker.pid:
                held.append(key)
        except (ProcessLookupError, ValueError, IndexError):
            continue
    return held


def _in_second_step(session_keys: list[str]) -> bool:
    turns = Turn.objects.filter(session_id__in=session_keys, status="running")
    return bool(session_keys) and all(
        Effect.objects.filter(scope=turn.scope, kind="tool_attempt").exists() for turn in turns
    )


def test_turns_redelivered_many_times_with_a_worker_killed_commit_exactly_once(
    workspace, broker_url, settings, tmp_path
):
    settings.LASHOPS_RUNNER = "celery"
    settings.LASHOPS_TURN_SWEEP_GRACE = 0
    settings.LASHOPS_TURN_REDISPATCH_SECONDS = 1
    env = {"LASHOPS_TOOL_PROVIDERS": TOOLS, "LASHOPS_SESSION_LEASE_TTL": "3"}
    tallies = {f"r{i}": tmp_path / f"tally-{i}.txt" for i in range(TURNS)}
    for key, tally in tallies.items():
        services.session_open(workspace=workspace, session_id=key, model=_script(tally))

    with celery_app_on(broker_url) as app:
        victim = WorkerProcess(broker_url, concurrency=3, log_path=tmp_path / "victim.log", extra_env=env)
        survivor = WorkerProcess(broker_url, concurrency=3, log_path=tmp_path / "survivor.log", extra_env=env)
        try:
            victim.wait_ready(app)
            survivor.wait_ready(app)
            turns = {
                key: services.turn_start(session=Session.objects.get(pk=key), text="count", background=True).pk
                for key in tallies
            }
            killed_with: list[str] = []
            deadline = time.monotonic() + 40
            last_sweep = 0.0
            while time.monotonic() < deadline:
                open_turns = list(Turn.objects.exclude(status="committed").values_list("pk", flat=True))
                if not open_turns and killed_with:
                    break
                for turn_id in open_turns:
                    for _ in range(COPIES):
                        drive_turn_task.apply_async(kwargs={"turn_id": turn_id})
                if not killed_with:
                    held = _held_by(victim)
                    if _in_second_step(held):
                        victim.kill(signal.SIGKILL)
                        assert victim.proc.returncode == -signal.SIGKILL  # it really died
                        killed_with = held
                if time.monotonic() - last_sweep > 1.0:
                    services.turns_sweep()  # as beat would: lease-free or expired turns are dispatched
                    last_sweep = time.monotonic()
                time.sleep(0.05)
            assert killed_with, "the victim worker never held a turn in its second step"
            # the drive messages still queued find every turn committed and change nothing
            time.sleep(1.5)
        finally:
            victim.stop()
            survivor.stop()
            connections.close_all()

    stored = {t.session_id: t for t in Turn.objects.all()}
    assert {key: stored[key].status for key in turns} == dict.fromkeys(turns, "committed")
    for key, turn_id in turns.items():
        turn = stored[key]
        assert (turn.pk, turn.outcome, turn.final_text) == (turn_id, "finished", "Counted once.")
        assert Session.objects.get(pk=key).head_revision == 1
        assert Event.objects.filter(type="turn.committed", subject__turn=turn_id).count() == 1
        assert UsageRecord.objects.filter(turn_id=turn_id).count() == 2
        assert tallies[key].read_text().splitlines() == ["call_0_0"], key  # the tool ran once
    # the turns the killed worker was driving were finished by a second drive
    assert all(stored[key].drive_attempts >= 2 for key in killed_with)
