"""The demo session: a scripted conversation that calls tools."""

from __future__ import annotations

from lashops.core.models import Workspace
from sessions_app import services
from sessions_app.models import ModelPrice, Turn


def seed(*, workspace: Workspace) -> None:
    ModelPrice.objects.get_or_create(
        provider="scripted", model="scripted-1", defaults={"input_per_mtok": 1, "output_per_mtok": 2}
    )
    session, _ = services.session_open(
        workspace=workspace,
        session_id="demo-session",
        model={"provider": "scripted", "model": "scripted-1", "parameters": {"script_name": "demo"}},
        system_prompt="You are the LashOps demo agent. Use tools when they help.",
    )
    if not Turn.objects.filter(session=session).exists():
        services.turn_start(session=session, text="What is 6 * 7, and what time is it?", source_key="demo-1")
