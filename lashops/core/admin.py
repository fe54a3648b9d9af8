from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from lashops.core import selectors, services
from lashops.core.admin_tools import ReadOnlyInline
from lashops.core.models import ApiKey, Effect, Event, Lease, WorkerHeartbeat, Workspace


class ApiKeyInline(ReadOnlyInline):
    model = ApiKey
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at")
    search_fields = ("slug", "name")
    filter_horizontal = ("members",)
    readonly_fields = ("created_at",)
    inlines = [ApiKeyInline]

    def save_model(self, request: HttpRequest, obj: Workspace, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            from lashops.core.models import StreamHead

            StreamHead.objects.get_or_create(workspace=obj)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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
class EventAdmin(admin.ModelAdmin):
    list_display = ("cursor", "type", "workspace", "ts", "session_id", "process_id", "mob_id")
    list_filter = ("workspace", "type")
    list_select_related = ("workspace",)
    search_fields = ("type", "session_id", "process_id", "mob_id")
    readonly_fields = ("workspace", "cursor", "type", "ts", "subject", "data", "session_id", "process_id", "mob_id")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ("scope", "key", "holder", "token", "acquired_at", "expires_at")
    list_filter = ("scope",)
    search_fields = ("key", "holder")
    readonly_fields = ("scope", "key", "holder", "token", "acquired_at", "expires_at")
    actions = ["revoke_leases"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected leases (fences the holder out)")
    def revoke_leases(self, request: HttpRequest, queryset: QuerySet[Lease]) -> None:
        for lease in queryset:
            services.lease_revoke(scope=lease.scope, key=lease.key)
        self.message_user(request, f"Revoked {queryset.count()} lease(s).")


@admin.register(Effect)
class EffectAdmin(admin.ModelAdmin):
    list_display = ("replay_key", "kind", "scope", "recorded_at")
    list_filter = ("kind",)
    search_fields = ("replay_key", "scope")
    readonly_fields = ("workspace", "scope", "replay_key", "kind", "outcome", "recorded_at")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """Runner processes and their health. Read-only: the beats and the worker sweep write them."""

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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
