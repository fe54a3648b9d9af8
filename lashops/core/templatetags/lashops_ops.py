"""Template tags for the admin's live panels and fleet counts (templates/admin/...)."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from lashops.core.models import Workspace
from lashops.core.selectors import latest_committed_cursor

register = template.Library()


def _panel(obj: Any) -> dict[str, Any] | None:
    from lashops.ops.views import stream_path

    label = f"{obj._meta.app_label}.{obj._meta.model_name}"
    if label == "sessions_app.session":
        workspace, stream = obj.workspace, f"/ws/sessions/{obj.pk}/"
        state_url, page = reverse("ops:session_json", args=[obj.pk]), reverse("ops:session", args=[obj.pk])
        match = {}
    elif label == "sessions_app.turn":
        workspace, stream = obj.session.workspace, f"/ws/sessions/{obj.session_id}/"
        state_url = reverse("ops:session_json", args=[obj.session_id])
        page, match = reverse("ops:session", args=[obj.session_id]), {"turn": obj.pk}
    elif label == "processes_app.process":
        workspace, stream = obj.workspace, stream_path("/ws/processes/")
        state_url, page = reverse("ops:process_json", args=[obj.pk]), reverse("ops:process", args=[obj.pk])
        match = {"process": obj.pk}
    elif label == "mobs_app.mob":
        workspace, stream = obj.workspace, f"/ws/mobs/{obj.mob_id}/console/"
        state_url, page = reverse("ops:mob_json", args=[obj.mob_id]), reverse("ops:mob", args=[obj.mob_id])
        match = {}
    elif label == "mobs_app.identity":
        workspace, stream = obj.mob.workspace, f"/ws/mobs/{obj.mob.mob_id}/console/"
        state_url, page = reverse("ops:mob_json", args=[obj.mob.mob_id]), reverse("ops:mob", args=[obj.mob.mob_id])
        match = {"identity": obj.key}
    else:
        return None
    return {
        "kind": label,
        "id": str(obj.pk),
        "workspace": workspace.slug,
        "cursor": latest_committed_cursor(workspace=workspace),
        "stream": stream,
        "state_url": f"{state_url}?workspace={workspace.slug}",
        "page": f"{page}?workspace={workspace.slug}",
        "match": match,
    }


@register.inclusion_tag("ops/_live_panel.html")
def live_panel(obj: Any) -> dict[str, Any]:
    """A panel that follows ``obj``'s stream: state, latest events, streaming text of a running turn."""
    return {"panel": _panel(obj) if obj is not None else None}


@register.inclusion_tag("ops/_fleet_counts.html", takes_context=True)
def fleet_counts(context: dict) -> dict[str, Any]:
    from lashops.ops.selectors import fleet_counts as counts_of

    user = context["request"].user
    qs = Workspace.objects.all() if user.is_superuser else user.lashops_workspaces.all()
    return {"rows": [{"workspace": w, "counts": counts_of(workspace=w)} for w in qs.order_by("slug")[:20]]}
