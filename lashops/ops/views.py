"""Dashboard pages. Thin: pick the workspace, read one snapshot, render it; the page's script
then follows the stream from the snapshot's cursor (static/ops/ops.js)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from lashops.core.errors import InvalidInput
from lashops.core.middleware import error_response
from lashops.core.models import Workspace
from lashops.ops import selectors


def workspaces_for(request: HttpRequest) -> list[Workspace]:
    user: Any = request.user  # a logged-in User (the ops views require one)
    qs = Workspace.objects.all() if user.is_superuser else user.lashops_workspaces.all()
    return list(qs.order_by("slug"))


def current_workspace(request: HttpRequest) -> Workspace:
    """``?workspace=<slug>``, else the one remembered in the session, else the first."""
    choices = workspaces_for(request)
    if not choices:
        raise Http404("You are not a member of any workspace.")
    wanted = request.GET.get("workspace") or request.session.get("ops_workspace")
    chosen = next((w for w in choices if w.slug == wanted), choices[0])
    request.session["ops_workspace"] = chosen.slug
    return chosen


def _page(request: HttpRequest, template: str, snapshot: dict[str, Any] | None, **context: Any) -> HttpResponse:
    if snapshot is None:
        raise Http404("Not found in this workspace.")
    workspace = current_workspace(request)
    return render(
        request,
        template,
        {"snapshot": snapshot, "workspace": workspace, "workspaces": workspaces_for(request), **context},
    )


def _all_workers(request: HttpRequest) -> bool:
    """``?workers=all`` lists stopped, dead and stale workers too (hidden by default)."""
    return request.GET.get("workers") == "all"


@staff_member_required
def fleet(request: HttpRequest) -> HttpResponse:
    workspace = current_workspace(request)
    try:
        snapshot = selectors.fleet_snapshot(
            workspace=workspace, range_name=request.GET.get("range"), all_workers=_all_workers(request)
        )
    except InvalidInput as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    return _page(request, "ops/fleet.html", snapshot)


@staff_member_required
def fleet_json(request: HttpRequest) -> JsonResponse:
    """The fleet page's state; ``?range=1h|24h|7d`` picks the burn charts' window (422 otherwise)."""
    try:
        snapshot = selectors.fleet_snapshot(
            workspace=current_workspace(request), range_name=request.GET.get("range"), all_workers=_all_workers(request)
        )
    except InvalidInput as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    return JsonResponse(snapshot)


@staff_member_required
def session(request: HttpRequest, session_id: str) -> HttpResponse:
    workspace = current_workspace(request)
    return _page(request, "ops/session.html", selectors.session_snapshot(workspace=workspace, session_id=session_id))


@staff_member_required
def session_json(request: HttpRequest, session_id: str) -> JsonResponse:
    snapshot = selectors.session_snapshot(workspace=current_workspace(request), session_id=session_id)
    if snapshot is None:
        raise Http404
    return JsonResponse(snapshot)


def stream_path(preferred: str) -> str:
    """``preferred`` when that socket route is registered, else the fleet stream (which carries
    every durable event of the workspace)."""
    from lashops.routing import websocket_urlpatterns

    routes = {str(p.pattern) for p in websocket_urlpatterns}
    return preferred if preferred.strip("/") + "/" in routes else "/ws/fleet/"


def _process_filters(request: HttpRequest) -> dict[str, str]:
    return {"status": request.GET.get("status", ""), "definition": request.GET.get("definition", "")}


@staff_member_required
def processes(request: HttpRequest) -> HttpResponse:
    workspace = current_workspace(request)
    snapshot = selectors.processes_snapshot(workspace=workspace, **_process_filters(request))
    return _page(request, "ops/processes.html", snapshot, stream_path=stream_path("/ws/processes/"))


@staff_member_required
def processes_json(request: HttpRequest) -> JsonResponse:
    snapshot = selectors.processes_snapshot(workspace=current_workspace(request), **_process_filters(request))
    if snapshot is None:
        raise Http404
    return JsonResponse(snapshot)


@staff_member_required
def process(request: HttpRequest, process_id: str) -> HttpResponse:
    workspace = current_workspace(request)
    snapshot = selectors.process_snapshot(workspace=workspace, process_id=process_id)
    return _page(request, "ops/process.html", snapshot, stream_path=stream_path("/ws/processes/"))


@staff_member_required
def process_json(request: HttpRequest, process_id: str) -> JsonResponse:
    snapshot = selectors.process_snapshot(workspace=current_workspace(request), process_id=process_id)
    if snapshot is None:
        raise Http404
    return JsonResponse(snapshot)


@staff_member_required
def mob(request: HttpRequest, mob_id: str) -> HttpResponse:
    workspace = current_workspace(request)
    return _page(request, "ops/mob.html", selectors.mob_snapshot(workspace=workspace, mob_id=mob_id))


@staff_member_required
def mob_json(request: HttpRequest, mob_id: str) -> JsonResponse:
    snapshot = selectors.mob_snapshot(workspace=current_workspace(request), mob_id=mob_id)
    if snapshot is None:
        raise Http404
    return JsonResponse(snapshot)
