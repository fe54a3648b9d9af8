"""The demo mob: an orchestrator and two specialists wired together, on the scripted model."""

from __future__ import annotations

from lashops.core.models import Workspace

DEMO_TOML = """
[mob]
id = "support-desk"
orchestrator = "dispatcher"

[profiles.dispatcher]
model = "scripted-1"
provider = "scripted"
peer_description = "Routes tickets to specialists"
skills = ["triage-rules"]
[profiles.dispatcher.tools]
builtins = true
comms = true

[profiles.specialist]
model = "scripted-1"
provider = "scripted"
peer_description = "Answers one product area"
[profiles.specialist.tools]
comms = true
memory = true

[wiring]
auto_wire_orchestrator = true
[[wiring.role_wiring]]
a = "specialist"
b = "specialist"

[skills.triage-rules]
source = "inline"
content = "Classify by product area, then hand off."

[limits]
max_sessions = 8

[[roster]]
key = "dispatcher"
profile = "dispatcher"
display_name = "Dispatcher"

[[roster]]
key = "billing"
profile = "specialist"
display_name = "Billing specialist"

[[roster]]
key = "tech"
profile = "specialist"
display_name = "Technical specialist"
addressability = "internal_only"
"""


def seed(*, workspace: Workspace) -> None:
    """Load the demo mob and send the dispatcher one message (idempotent: the same definition
    is not a new revision and the same idempotency key replays the original acceptance)."""
    from mobs_app.messaging import identity_send
    from mobs_app.services import mob_load

    mob = mob_load(workspace=workspace, source=DEMO_TOML).mob
    identity_send(mob=mob, key="dispatcher", text="Hello team, who handles refunds?", idempotency_key="demo-hello")
