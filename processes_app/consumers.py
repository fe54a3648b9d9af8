"""/ws/processes/?after=<cursor>: replays the workspace's process events after the cursor,
then tails live ones (the protocol of ``lashops.core.consumers.ReplayingConsumer``)."""

from __future__ import annotations

from typing import Any

from lashops.core.consumers import ReplayingConsumer
from lashops.core.events import processes_group


class ProcessesConsumer(ReplayingConsumer):
    def stream_groups(self) -> list[str]:
        return [processes_group(self.workspace.pk)]

    def stream_filter(self) -> dict[str, Any]:
        return {"process_only": True}
