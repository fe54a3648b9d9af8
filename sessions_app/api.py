"""Session endpoints (paths fixed in DESIGN.md). Thin: parse, call a service or selector, render."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from ninja import File, Form, Query, Router, Schema, Status, UploadedFile
from ninja.pagination import paginate

from lashops.core.auth import WorkspaceRequest
from lashops.core.errors import NotFound
from lashops.core.pagination import BoundedLimitOffsetPagination
from lashops.core.schemas import ErrorOut, EventPageOut, cursor_field, page_limit_field
from lashops.core.selectors import event_page
from sessions_app import selectors, services
from sessions_app.models import SessionAttachment
from sessions_app.schemas import (
    AttachmentOut,
    CommandIn,
    CommandOut,
    InputIn,
    InputOut,
    SessionIn,
    SessionOut,
    SessionStatusIn,
    TranscriptOut,
    TurnIn,
    TurnOut,
)

router = Router(tags=["sessions"])
MAX_FILENAME = 255  # SessionAttachment.filename (Django cuts uploaded file names to 255 itself)
ERRORS = {404: ErrorOut, 409: ErrorOut, 422: ErrorOut}


@router.post("", response={200: SessionOut, 201: SessionOut, **ERRORS})
def session_open(request: WorkspaceRequest, payload: SessionIn):
    """Open a session (201), or return the existing one with that id (200)."""
    parent = (
        selectors.session_get(workspace=request.workspace, session_id=payload.parent_id) if payload.parent_id else None
    )
    session, created = services.session_open(
        workspace=request.workspace,
        session_id=payload.id,
        model=payload.model.dict() if payload.model else None,
        system_prompt=payload.system_prompt,
        prompt_layers=payload.prompt_layers,
        parent=parent,
        mode=payload.mode,
        metadata=payload.metadata,
    )
    return Status(201 if created else 200, session)


@router.get("", response=list[SessionOut])
@paginate(BoundedLimitOffsetPagination)
def session_list(request: WorkspaceRequest):
    return selectors.session_list(workspace=request.workspace)


@router.get("/{session_id}", response={200: SessionOut, 404: ErrorOut})
def session_detail(request: WorkspaceRequest, session_id: str):
    return selectors.session_get(workspace=request.workspace, session_id=session_id)


@router.patch("/{session_id}", response={200: SessionOut, **ERRORS})
def session_update(request: WorkspaceRequest, session_id: str, payload: SessionStatusIn):
    """Park, close or re-open a session. Needs the lane free (409 while a turn runs)."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return services.session_set_status(session=session, status=payload.status)


@router.delete("/{session_id}", response={200: dict, 404: ErrorOut, 409: ErrorOut})
def session_delete(request: WorkspaceRequest, session_id: str):
    """Delete the session; the report lists what was removed and which processes were orphaned."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return services.session_delete(session=session)


@router.post("/{session_id}/turns", response={200: TurnOut, 202: TurnOut, **ERRORS})
def turn_create(request: WorkspaceRequest, session_id: str, payload: TurnIn):
    """Run a turn. Synchronous by default (200 with the committed turn); ``background: true``
    answers 202 and the runner drives it. 409 ``session_execution_busy`` while a turn runs."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    turn = services.turn_start(
        session=session, text=payload.input, source_key=payload.source_key, background=payload.background
    )
    return Status(202 if payload.background and turn.status != "committed" else 200, turn)


@router.get("/{session_id}/turns", response={200: list[TurnOut], 404: ErrorOut})
@paginate(BoundedLimitOffsetPagination)
def turn_list(request: WorkspaceRequest, session_id: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return selectors.turn_list(session=session)


@router.get("/{session_id}/turns/{turn_id}", response={200: TurnOut, 404: ErrorOut})
def turn_detail(request: WorkspaceRequest, session_id: str, turn_id: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return selectors.turn_get(session=session, turn_id=turn_id)


@router.post("/{session_id}/turns/{turn_id}/cancel", response={202: TurnOut, 404: ErrorOut, 409: ErrorOut})
def turn_cancel(request: WorkspaceRequest, session_id: str, turn_id: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    turn = selectors.turn_get(session=session, turn_id=turn_id)
    return Status(202, services.turn_cancel(turn=turn))


@router.post("/{session_id}/inputs", response={202: InputOut, **ERRORS})
def input_create(request: WorkspaceRequest, session_id: str, payload: InputIn):
    """Queue input: taken at the running turn's next step boundary, or by the next turn, exactly once."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return Status(202, services.input_enqueue(session=session, text=payload.text, source_key=payload.source_key))


@router.get("/{session_id}/inputs", response={200: list[InputOut], 404: ErrorOut})
def input_list(request: WorkspaceRequest, session_id: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return list(selectors.pending_inputs(session=session))


@router.delete("/{session_id}/inputs/{source_key}", response={200: InputOut, **ERRORS})
def input_cancel(request: WorkspaceRequest, session_id: str, source_key: str):
    """Cancel pending input no turn has accepted yet (409 once accepted)."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return services.input_cancel(session=session, source_key=source_key)


@router.post("/{session_id}/commands", response={202: CommandOut, **ERRORS})
def command_create(request: WorkspaceRequest, session_id: str, payload: CommandIn):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return Status(
        202,
        services.command_submit(
            session=session, kind=payload.kind, source_key=payload.source_key, reason=payload.reason
        ),
    )


@router.get("/{session_id}/transcript", response={200: TranscriptOut, 404: ErrorOut})
def transcript(request: WorkspaceRequest, session_id: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return {
        "session_id": session.pk,
        "head_revision": session.head_revision,
        "leaf_node_id": session.leaf_node_id,
        "nodes": selectors.transcript(session=session),
    }


class AfterQuery(Schema):
    after: int = cursor_field()
    limit: int = page_limit_field()


@router.get("/{session_id}/events", response={200: EventPageOut, **ERRORS})
def session_events(request: WorkspaceRequest, session_id: str, query: Query[AfterQuery]):
    """The session's durable events after a cursor."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return event_page(workspace=request.workspace, after=query.after, limit=query.limit, session_id=session.pk)


@router.get("/{session_id}/usage", response={200: dict, 404: ErrorOut})
def session_usage(request: WorkspaceRequest, session_id: str):
    """Own usage, child (subagent) usage, totals, cost, and a breakdown by source and model."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return selectors.usage_report(session=session)


@router.post("/{session_id}/attachments", response={201: AttachmentOut, **ERRORS})
def attachment_upload(
    request: WorkspaceRequest,
    session_id: str,
    file: File[UploadedFile],
    filename: str = Form("", max_length=MAX_FILENAME, description="Overrides the uploaded file's name."),
):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    stored = services.attachment_put(
        session=session, content=file.read(), content_type=file.content_type or "", filename=filename or file.name or ""
    )
    a = stored.attachment
    return Status(
        201, {"sha256": a.sha256, "size": a.size, "content_type": a.content_type, "filename": stored.link.filename}
    )


@router.get("/{session_id}/attachments/{sha256}", response={404: ErrorOut})
def attachment_download(request: WorkspaceRequest, session_id: str, sha256: str):
    """Read a blob the session holds (404 for one it does not, even if another session holds it)."""
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    link = SessionAttachment.objects.select_related("attachment").filter(session=session, attachment_id=sha256).first()
    if link is None:
        raise NotFound(f"session {session.pk!r} holds no attachment {sha256!r}")
    return FileResponse(
        default_storage.open(link.attachment.storage_name, "rb"), content_type=link.attachment.content_type
    )


@router.delete("/{session_id}/attachments/{sha256}", response={200: dict, 404: ErrorOut})
def attachment_remove(request: WorkspaceRequest, session_id: str, sha256: str):
    session = selectors.session_get(workspace=request.workspace, session_id=session_id)
    return {"removed": services.attachment_delete(session=session, sha256=sha256)}
