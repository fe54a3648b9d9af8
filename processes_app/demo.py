"""Demo content for ``make demo``: a few example processes, a trigger and a schedule (idempotent)."""

from __future__ import annotations

from lashops.core.models import Workspace
from processes_app.models import TriggerSubscription
from processes_app.services import process_start
from processes_app.triggers import schedule_save, trigger_event_declare, trigger_subscribe


def seed(*, workspace: Workspace) -> None:
    process_start(
        workspace=workspace,
        process_id="demo-greet",
        definition="demo.greet",
        input={"name": "LashOps"},
        disposition="rerunnable",
        provenance={"host": "demo"},
    )
    process_start(
        workspace=workspace,
        process_id="demo-approval",
        definition="demo.approval",
        input={"item": "deploy v2", "sleep": 3},
        disposition="rerunnable",
        provenance={"host": "demo"},
    )
    process_start(
        workspace=workspace,
        process_id="demo-fanout",
        definition="demo.fanout",
        input={"names": ["Ada", "Grace", "Barbara"]},
        disposition="rerunnable",
        provenance={"host": "demo"},
    )
    event = trigger_event_declare(
        workspace=workspace,
        name="demo.tick",
        payload_schema={"type": "object"},
        description="Emitted every minute by the demo schedule.",
    )
    if not TriggerSubscription.objects.filter(workspace=workspace, event=event, name="greet-on-tick").exists():
        trigger_subscribe(
            workspace=workspace,
            event_name=event.name,
            definition="demo.greet",
            input_template={"name": "$occurrence_id"},
            name="greet-on-tick",
        )
    schedule_save(workspace=workspace, name="every-minute", event_name=event.name, cron="* * * * *")
