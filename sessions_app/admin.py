from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from lashops.core.admin_tools import ReadOnlyInline, WorkspaceScopedAdmin, member_workspace_ids, register_lease_keys
from lashops.core.errors import LashOpsError
from sessions_app import selectors, services
from sessions_app.models import (
    Attachment,
    ModelPrice,
    Node,
    PendingInput,
    Session,
    SessionAttachment,
    SessionCommand,
    Turn,
    UsageRecord,
)
from sessions_app.runtime_host import SESSION_LEASE_SCOPE

register_lease_keys(SESSION_LEASE_SCOPE, lambda ids: Session.objects.filter(workspace__in=ids).values("pk"))


class TurnInline(ReadOnlyInline):
    workspace_path = "session__workspace"
    model = Turn
    fields = ("index", "status", "outcome", "stop_reason", "input_text", "final_text", "input_tokens", "output_tokens")
    ordering = ("-index",)


class NodeInline(ReadOnlyInline):
    workspace_path = "session__workspace"
    model = Node
    fields = ("seq", "kind", "node_id", "parent_id", "payload")
    ordering = ("seq",)
    show_change_link = False


class PendingInputInline(ReadOnlyInline):
    workspace_path = "session__workspace"
    model = PendingInput
    fields = ("source_key", "text", "status", "claimed_by", "accepted_by", "created_at")


@admin.register(Session)
class SessionAdmin(WorkspaceScopedAdmin):
    """Sessions are opened through the API; here only the system prompt and metadata are
    edited, and a delete (the Delete button or "delete selected") is ``session_delete``: it
    refuses a busy session and reports what went with it."""

    workspace_path = "workspace"
    deletion = "service"
    editable_fields = ("system_prompt", "metadata")
    list_display = (
        "id",
        "workspace",
        "status",
        "mode",
        "provider",
        "head_revision",
        "active_turn_id",
        "cost_usd",
        "created_at",
    )
    list_filter = ("workspace", "status", "mode")
    list_select_related = ("workspace",)
    search_fields = ("id", "system_prompt")
    raw_id_fields = ("parent",)
    readonly_fields = (
        "head_revision",
        "leaf_node_id",
        "active_turn_id",
        "plugin_state",
        "tool_catalog_generation",
        "depth",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "reasoning_output_tokens",
        "child_input_tokens",
        "child_output_tokens",
        "cost_usd",
        "created_at",
        "updated_at",
        "transcript",
    )
    inlines = [TurnInline, PendingInputInline, NodeInline]
    actions = ["cancel_active_turn", "reset_session", "delete_with_report"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sessions are opened through the API (session_open)

    def delete_object(self, request: HttpRequest, obj: Session) -> bool:
        try:
            report = services.session_delete(session=obj)
        except LashOpsError as exc:
            self.report_refusal(request, obj.pk, exc.message)
            return False
        self.message_user(request, f"Deleted {obj.pk}: {report}")
        return True

    @admin.display(description="provider")
    def provider(self, obj: Session) -> str:
        return f"{obj.model.get('provider')}/{obj.model.get('model')}"

    @admin.display(description="Transcript (settled)")
    def transcript(self, obj: Session) -> str:
        nodes = selectors.transcript(session=obj)
        if not nodes:
            return "(empty)"
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "", "<li><b>{}</b>: {}</li>", ((n.kind, str(n.payload.get("text") or n.payload)[:500]) for n in nodes)
            ),
        )

    @admin.action(description="Cancel the running turn")
    def cancel_active_turn(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        for session in queryset.exclude(active_turn_id=""):
            turn = Turn.objects.select_related("session__workspace").get(pk=session.active_turn_id)
            try:
                services.turn_cancel(turn=turn)
                self.message_user(request, f"Cancel requested for turn {turn} of {session.pk}.")
            except LashOpsError as exc:
                self.message_user(request, f"{session.pk}: {exc.message}", level="warning")

    @admin.action(description="Reset the conversation (reset_session command)")
    def reset_session(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        import uuid

        for session in queryset:
            command = services.command_submit(
                session=session, kind="reset_session", source_key=f"admin-{uuid.uuid4().hex[:8]}", reason="admin action"
            )
            self.message_user(request, f"{session.pk}: reset {command.status}.")

    @admin.action(description="Delete with report (processes are orphaned, not cancelled)")
    def delete_with_report(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        for session in list(queryset):
            self.delete_object(request, session)


@admin.register(Turn)
class TurnAdmin(WorkspaceScopedAdmin):
    workspace_path = "session__workspace"
    read_only = True
    deletion = "never"
    list_display = (
        "__str__",
        "status",
        "outcome",
        "stop_reason",
        "steps",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "outcome", "stop_reason", "background")
    list_select_related = ("session",)
    search_fields = ("id", "session__id", "input_text", "final_text")
    readonly_fields = [f.name for f in Turn._meta.fields] + ["effect_journal"]
    actions = ["cancel_turns"]
    show_full_result_count = False

    @admin.display(description="Effect journal (read-only)")
    def effect_journal(self, obj: Turn) -> str:
        effects = selectors.turn_effects(turn=obj)
        if not effects:
            return "(no journaled effects)"
        return format_html(
            "<table><tr><th>kind</th><th>replay key</th><th>recorded</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                ((e.kind, e.replay_key, e.recorded_at) for e in effects),
            ),
        )

    @admin.action(description="Cancel selected turns")
    def cancel_turns(self, request: HttpRequest, queryset: QuerySet[Turn]) -> None:
        for turn in queryset.select_related("session__workspace"):
            try:
                services.turn_cancel(turn=turn)
            except LashOpsError as exc:
                self.message_user(request, f"{turn}: {exc.message}", level="warning")
        self.message_user(request, "Cancel requested.")


@admin.register(PendingInput)
class PendingInputAdmin(WorkspaceScopedAdmin):
    workspace_path = "session__workspace"
    read_only = True
    deletion = "never"
    list_display = ("session", "source_key", "status", "claimed_by", "accepted_by", "created_at")
    list_filter = ("status",)
    search_fields = ("session__id", "source_key", "text")
    readonly_fields = (
        "session",
        "source_key",
        "text",
        "status",
        "claimed_by",
        "accepted_by",
        "created_at",
        "updated_at",
    )


@admin.register(SessionCommand)
class SessionCommandAdmin(WorkspaceScopedAdmin):
    workspace_path = "session__workspace"
    read_only = True
    deletion = "never"
    list_display = ("session", "kind", "source_key", "status", "applied_at")
    list_filter = ("kind", "status")
    search_fields = ("session__id", "source_key")
    readonly_fields = ("session", "kind", "source_key", "reason", "status", "result", "applied_at")


@admin.register(UsageRecord)
class UsageRecordAdmin(WorkspaceScopedAdmin):
    workspace_path = "session__workspace"
    read_only = True
    deletion = "never"
    list_display = ("turn", "source", "provider", "model", "input_tokens", "output_tokens", "cost_usd", "created_at")
    list_filter = ("source", "provider", "model")
    search_fields = ("session__id", "model")
    readonly_fields = [f.name for f in UsageRecord._meta.fields]
    show_full_result_count = False


@admin.register(ModelPrice)
class ModelPriceAdmin(WorkspaceScopedAdmin):
    """Prices are shared by every workspace: members may read them, superusers set them."""

    workspace_path = None
    global_rows = "read"
    deletion = "plain"
    editable_fields = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
    list_display = (
        "provider",
        "model",
        "input_per_mtok",
        "output_per_mtok",
        "cache_read_per_mtok",
        "cache_write_per_mtok",
    )
    list_editable = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
    list_filter = ("provider",)
    search_fields = ("model",)


class HolderInline(ReadOnlyInline):
    workspace_path = "session__workspace"
    model = SessionAttachment
    fields = ("session", "filename", "node_id", "created_at")


@admin.register(Attachment)
class AttachmentAdmin(WorkspaceScopedAdmin):
    """Content-addressed blobs, shared by the sessions that hold them: a member sees a blob one
    of their sessions holds, and only those holders. Removed per session (attachment_delete)."""

    workspace_path = "holders__session__workspace"
    read_only = True
    deletion = "never"
    list_display = ("sha256", "size", "content_type", "created_at")
    ordering = ("-created_at",)
    search_fields = ("sha256",)
    readonly_fields = ("sha256", "size", "content_type", "storage_name", "created_at")
    inlines = [HolderInline]

    def scope_queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        ids = member_workspace_ids(request)
        if ids is None:
            return queryset
        held = SessionAttachment.objects.filter(session__workspace__in=ids).values("attachment_id")
        return queryset.filter(pk__in=held)  # a subquery: no duplicate rows per holder
