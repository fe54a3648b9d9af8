"""A mob definition the mob tests share, and a helper to add a member to a mob."""

from __future__ import annotations

MOB_TOML = """
[mob]
id = "desk"
orchestrator = "lead"

[profiles.lead]
model = "scripted"
provider = "scripted"
peer_description = "Routes work"
[profiles.lead.tools]
comms = true
builtins = true

[profiles.specialist]
model = "scripted"
peer_description = "Answers one area"
[profiles.specialist.tools]
comms = true
shell = true

[profiles.mute]
model = "scripted"

[wiring]
auto_wire_orchestrator = true
"""


def add(mob, key, profile="specialist", **extra):
    """Create member ``key`` of ``mob`` with ``profile`` (dormant until first used)."""
    from mobs_app.services import identity_create

    return identity_create(mob=mob, spec={"key": key, "profile": profile, **extra})
