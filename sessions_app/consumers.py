from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from lashops.core.consumers import ReplayingConsumer
from lashops.core.events import session_group
from sessions_app.models import Session


class SessionConsumer(ReplayingConsumer):
    """/ws/sessions/{id}/?after=: the session's durable events, then live ones (text deltas
    carry ``"live": true``; a retried attempt's deltas are retracted by ``model.attempt_reset``)."""

    @property
    def session_id(self) -> str:
        return self.scope["url_route"]["kwargs"]["session_id"]

    async def authorize(self) -> bool:
        return await database_sync_to_async(
            Session.objects.filter(workspace=self.workspace, pk=self.session_id).exists
        )()

    def stream_groups(self) -> list[str]:
        return [session_group(self.session_id)]

    def stream_filter(self) -> dict[str, Any]:
        return {"session_id": self.session_id}
