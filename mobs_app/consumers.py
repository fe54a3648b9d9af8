"""/ws/mobs/{mob_id}/console/?after=: the mob's durable events (identity, ledger and console
frames) replayed from the workspace cursor, then live."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from lashops.core.consumers import ReplayingConsumer
from lashops.core.events import mob_group
from mobs_app.models import Mob


class MobConsoleConsumer(ReplayingConsumer):
    mob_pk: int

    @database_sync_to_async
    def _find(self) -> int | None:
        mob_id = self.scope["url_route"]["kwargs"]["mob_id"]
        return Mob.objects.filter(workspace=self.workspace, mob_id=mob_id).values_list("pk", flat=True).first()

    async def authorize(self) -> bool:
        pk = await self._find()
        if pk is None:
            return False  # another workspace's mob, or none: refused like an unknown one
        self.mob_pk = pk
        return True

    def stream_groups(self) -> list[str]:
        return [mob_group(str(self.mob_pk))]

    def stream_filter(self) -> dict[str, Any]:
        return {"mob_id": str(self.mob_pk)}
