from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.http import HttpRequest

from lashops.core import selectors, services
from lashops.core.admin_tools import ReadOnlyInline, WorkspaceScopedAdmin, lease_scope_q, member_workspace_ids
from lashops.core.models import ApiKey, Effect, Event, Lease, WorkerHeartbeat, Workspace


class ApiKeyInline(ReadOnlyInline):
    model = ApiKey
    workspace_path = "workspace"
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceScopedAdmin):
    """Members see their workspaces and may rename them; creating workspaces and choosing
    their members is for superusers. A workspace is never deleted here (it owns every journal)."""

    workspace_path = "pk"
    deletion = "never"
    editable_fields = ("name", "members")
    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")
    filter_horizontal = ("members",)
    readonly_fields = ("created_at",)
    inlines = [ApiKeyInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return member_workspace_ids(request) is None and super().has_add_permission(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Workspace | None = None) -> tuple[str, ...]:
        readonly = super().get_readonly_fields(request, obj)
        if member_workspace_ids(request) is not None and "members" not in readonly:
            return (*readonly, "members")  # who belongs to a workspace is for superusers to say
        return readonly

    def save_model(self, request: HttpRequest, obj: Workspace, form: object, change: bool) -> None:
        if change:
            obj.save()
            return
        created = services.workspace_create(slug=obj.slug, name=obj.name)
        obj.pk, obj.created_at = created.pk, created.created_at
        obj._state.adding = False


@admin.register(ApiKey)
class ApiKeyAdmin(WorkspaceScopedAdmin):
    """Keys are issued by the service (the plaintext is shown once) and revoked, never deleted."""

    workspace_path = "workspace"
    deletion = "never"
    editable_fields = ("name",)
    list_display = ("name", "workspace", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("workspace", ("revoked_at", admin.EmptyFieldListFilter))
    list_select_related = ("workspace",)
    search_fields = ("name", "prefix", "workspace__slug")
    actions = ["revoke_keys"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("workspace", "name")
        return ("workspace", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("workspace", "prefix", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request: HttpRequest, obj: ApiKey, form: object, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        issued = services.api_key_create(workspace=obj.workspace, name=obj.name)
        obj.pk = issued.api_key.pk
        obj.prefix = issued.api_key.prefix
        obj.created_at = issued.api_key.created_at
        obj._state.adding = False
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {issued.plaintext}",
            level=messages.WARNING,
        )

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(api_key=api_key)
            count += 1
        self.message_user(request, f"Revoked {count} API key(s).")


@admin.register(Event)
class EventAdmin(WorkspaceScopedAdmin):
    workspace_path = "workspace"
    read_only = True
    deletion = "never"
    list_display = ("cursor", "type", "workspace", "ts", "session_id", "process_id", "mob_id")
    list_filter = ("workspace", "type")
    list_select_related = ("workspace",)
    search_fields = ("type", "session_id", "process_id", "mob_id")
    readonly_fields = ("workspace", "cursor", "type", "ts", "subject", "data", "session_id", "process_id", "mob_id")
    show_full_result_count = False


class LeaseScopedAdmin(WorkspaceScopedAdmin):
    """Leases name their subject by (scope, key): a member sees the leases of their workspaces'
    sessions, processes and identities (each app registers its scope with
    ``admin_tools.register_lease_keys``); other scopes are for superusers."""

    workspace_path = "(scope, key)"
    read_only = True
    deletion = "never"

    def scope_queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        ids = member_workspace_ids(request)
        return queryset if ids is None else queryset.filter(lease_scope_q(ids))


@admin.register(Lease)
class LeaseAdmin(LeaseScopedAdmin):
    list_display = ("scope", "key", "holder", "token", "acquired_at", "expires_at")
    list_filter = ("scope",)
    search_fields = ("key", "holder")
    readonly_fields = ("scope", "key", "holder", "token", "acquired_at", "expires_at")
    actions = ["revoke_leases"]

    @admin.action(description="Revoke selected leases (fences the holder out)")
    def revoke_leases(self, request: HttpRequest, queryset: QuerySet[Lease]) -> None:
        for lease in queryset:
            services.lease_revoke(scope=lease.scope, key=lease.key)
        self.message_user(request, f"Revoked {queryset.count()} lease(s).")


@admin.register(Effect)
class EffectAdmin(WorkspaceScopedAdmin):
    workspace_path = "workspace"
    read_only = True
    deletion = "never"
    list_display = ("replay_key", "kind", "scope", "recorded_at")
    list_filter = ("kind",)
    search_fields = ("replay_key", "scope")
    readonly_fields = ("workspace", "scope", "replay_key", "kind", "outcome", "recorded_at")
    show_full_result_count = False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(WorkspaceScopedAdmin):
    """Runner processes and their health. Read-only: the beats and the worker sweep write them.
    A worker runs every workspace's work (its ``in_flight`` names it), so only superusers see
    this table; members see their workspaces' workers on the ops fleet page, mapped per item."""

    workspace_path = None
    global_rows = "hidden"
    read_only = True
    deletion = "never"

    list_display = (
        "worker_id",
        "kind",
        "host",
        "pid",
        "health",
        "last_beat_at",
        "stale_reported_at",
        "in_flight_count",
        "completed",
    )
    list_filter = (
        "kind",
        ("stale_reported_at", admin.EmptyFieldListFilter),
        ("stopped_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("worker_id", "host")
    readonly_fields = [f.name for f in WorkerHeartbeat._meta.fields if f.name != "id"]
    show_full_result_count = False

    @admin.display(description="health")
    def health(self, obj: WorkerHeartbeat) -> str:
        health = selectors.worker_health(obj)
        if health == "stale":
            return "stale (reported)" if obj.stale_reported_at else "stale (not yet reported)"
        return health


# Users and groups belong to no workspace, and a user who may edit them may make anyone a
# superuser: superusers only.
User = get_user_model()
for _model in (User, Group):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


@admin.register(User)
class LashOpsUserAdmin(WorkspaceScopedAdmin, UserAdmin):
    workspace_path = None
    global_rows = "hidden"
    deletion = "plain"
    editable_fields = (
        "username",
        "password",
        "first_name",
        "last_name",
        "email",
        "is_active",
        "is_staff",
        "is_superuser",
        "groups",
        "user_permissions",
        "last_login",
        "date_joined",
    )


@admin.register(Group)
class LashOpsGroupAdmin(WorkspaceScopedAdmin, GroupAdmin):
    workspace_path = None
    global_rows = "hidden"
    deletion = "plain"
    editable_fields = ("name", "permissions")
