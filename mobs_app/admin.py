"""Admin for mobs: definitions (a TOML editor that validates), identities (state, lease and
continuity read-only; lifecycle actions), edges (reconcile), identity leases (revoke), console,
ledger and contacts. Actions call services and report with message_user."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import CharField, QuerySet, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest

from lashops.core import services as core_services
from lashops.core.admin import LeaseScopedAdmin
from lashops.core.admin_tools import ReadOnlyInline, WorkspaceScopedAdmin, WorkspaceScopedInline, register_lease_keys
from lashops.core.errors import LashOpsError
from lashops.core.models import Workspace
from mobs_app import delivery, services
from mobs_app.contacts import parse_transport
from mobs_app.definition import parse_definition
from mobs_app.errors import DefinitionInvalid
from mobs_app.leases import SCOPE
from mobs_app.models import (
    ConsoleFrame,
    Contact,
    Continuity,
    Edge,
    Identity,
    IdentityLease,
    Mob,
    MobDefinition,
    MobEvent,
)
from mobs_app.topology import canonical

register_lease_keys(
    SCOPE,
    lambda ids: (
        Identity.objects.filter(mob__workspace__in=ids)
        .annotate(lease_key=Concat(Cast("mob_id", CharField()), Value(":"), "key", output_field=CharField()))  # type: ignore[no-redef, misc]  # the stubs see the model property of that name
        .values("lease_key")
    ),
)


class DefinitionForm(forms.ModelForm):
    """Paste or edit TOML; it is validated with the same parser the API uses."""

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.all())
    source = forms.CharField(widget=forms.Textarea(attrs={"rows": 30, "cols": 100, "style": "font-family: monospace"}))

    class Meta:
        model = MobDefinition
        fields = ("source",)

    def clean_source(self) -> str:
        source = self.cleaned_data["source"]
        try:
            parse_definition(source)
        except DefinitionInvalid as exc:
            raise forms.ValidationError(
                [f"line {p['line'] or '?'}: {p['path'] or '(document)'}: {p['message']}" for p in exc.problems]
            ) from None
        return source


@admin.register(MobDefinition)
class MobDefinitionAdmin(WorkspaceScopedAdmin):
    """Saving never edits a revision: it loads the TOML as the mob's next revision (mob_load),
    in the workspace chosen when adding, or the mob's own when changing."""

    workspace_path = "mob__workspace"
    deletion = "never"
    editable_fields = ("source",)

    form = DefinitionForm
    list_display = ("mob", "revision", "created_at")
    list_filter = ("mob__workspace",)
    list_select_related = ("mob__workspace",)
    search_fields = ("mob__mob_id",)
    readonly_fields = ("mob", "revision", "data", "created_at")

    def get_form(self, request: HttpRequest, obj: MobDefinition | None = None, **kwargs):  # type: ignore[override]  # change= arrives in kwargs
        form = super().get_form(request, obj, **kwargs)
        if obj is not None:
            form.base_fields.pop("workspace", None)  # a revision stays in its mob's workspace
        return form

    def get_fields(self, request: HttpRequest, obj: MobDefinition | None = None):
        return ("workspace", "source") if obj is None else ("source", "mob", "revision", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: MobDefinition | None = None) -> tuple[str, ...]:
        # The form's ``workspace`` is declared on the form: only the add form has it.
        return tuple(f for f in super().get_readonly_fields(request, obj) if f != "workspace")

    def save_model(self, request: HttpRequest, obj: MobDefinition, form: forms.Form, change: bool) -> None:
        workspace = obj.mob.workspace if change else form.cleaned_data["workspace"]
        result = services.mob_load(workspace=workspace, source=form.cleaned_data["source"])
        obj.pk = result.definition.pk
        obj.mob = result.mob
        obj.revision = result.definition.revision
        obj._state.adding = False
        verb = "is now revision" if result.created else "is unchanged at revision"
        self.message_user(request, f"Mob {result.mob.mob_id} {verb} {result.definition.revision}.")


class RevisionInline(ReadOnlyInline):
    model = MobDefinition
    workspace_path = "mob__workspace"
    fields = ("revision", "created_at")


@admin.register(Mob)
class MobAdmin(WorkspaceScopedAdmin):
    """Mobs are created by loading a definition and changed by loading the next revision; here
    they are acted on (actions call services), never edited or deleted."""

    workspace_path = "workspace"
    read_only = True
    deletion = "never"
    list_display = ("mob_id", "workspace", "active_revision", "bootstrap_mode", "session_count", "max_sessions")
    list_filter = ("workspace", "bootstrap_mode", "shutting_down")
    list_select_related = ("workspace", "active_revision")
    search_fields = ("mob_id",)
    readonly_fields = (
        "workspace",
        "mob_id",
        "active_revision",
        "bootstrap_mode",
        "warm_concurrency",
        "bootstrap_error",
        "max_sessions",
        "session_count",
        "shutting_down",
        "console_seq",
        "ledger_seq",
        "created_at",
        "updated_at",
    )
    inlines = [RevisionInline]
    actions = ["reconcile_edges", "warm", "drain", "resume"]

    def _each(self, request: HttpRequest, queryset: QuerySet[Mob], label: str, call) -> None:
        done = 0
        for mob in queryset.select_related("workspace", "active_revision"):
            try:
                call(mob)
                done += 1
            except LashOpsError as exc:
                self.message_user(request, f"{mob}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"{label}: {done} mob(s).")

    @admin.action(description="Reconcile edges")
    def reconcile_edges(self, request: HttpRequest, queryset: QuerySet[Mob]) -> None:
        self._each(request, queryset, "Edges reconciled", lambda mob: services.edges_reconcile(mob=mob))

    @admin.action(description="Warm dormant identities in the background (concurrency 4)")
    def warm(self, request: HttpRequest, queryset: QuerySet[Mob]) -> None:
        self._each(
            request,
            queryset,
            "Warming started",
            lambda mob: services.mob_bootstrap(mob=mob, mode="lazy_background_warm", concurrency=4),
        )

    @admin.action(description="Drain (refuse new dispatches)")
    def drain(self, request: HttpRequest, queryset: QuerySet[Mob]) -> None:
        self._each(request, queryset, "Draining", lambda mob: services.mob_drain(mob=mob))

    @admin.action(description="Resume after drain")
    def resume(self, request: HttpRequest, queryset: QuerySet[Mob]) -> None:
        self._each(request, queryset, "Resumed", lambda mob: services.mob_drain(mob=mob, shutting_down=False))


class ContinuityInline(WorkspaceScopedInline, admin.StackedInline):
    model = Continuity
    workspace_path = "identity__mob__workspace"
    fields = ("session_id", "generation", "checkpoint_version", "fencing_token", "runtime_instance", "updated_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Identity)
class IdentityAdmin(WorkspaceScopedAdmin):
    """Identities are added through identity_create and deleted through identity_delete (lease,
    capacity, edges, ledger); a change edits descriptive fields only, never the key, mob,
    profile or state."""

    workspace_path = "mob__workspace"
    deletion = "service"
    editable_fields = ("display_name", "labels", "context", "initial_message")
    list_display = ("key", "mob", "profile", "addressability", "state", "revision", "materializations")
    list_filter = ("state", "addressability", "source", "mob")
    list_select_related = ("mob",)
    search_fields = ("key", "display_name", "mob__mob_id")
    raw_id_fields = ("mob",)
    show_full_result_count = False
    readonly_fields = ("state", "broken_reason", "revision", "materializations", "lease", "created_at", "updated_at")
    inlines = [ContinuityInline]
    actions = ["materialize", "retire", "reset", "reload", "warm"]

    @admin.display(description="lease")
    def lease(self, obj: Identity) -> str:
        lease = IdentityLease.objects.filter(scope=SCOPE, key=obj.lease_key).first()
        if lease is None or not lease.holder:
            return "free"
        return f"held by {lease.holder} (token {lease.token}) until {lease.expires_at:%Y-%m-%d %H:%M:%S}"

    def delete_object(self, request: HttpRequest, obj: Identity) -> bool:
        try:
            services.identity_delete(identity=obj)
        except LashOpsError as exc:
            self.report_refusal(request, obj.key, f"{exc.code}: {exc.message}")
            return False
        self.message_user(request, f"Deleted identity {obj.key} of mob {obj.mob}.")
        return True

    def save_model(self, request: HttpRequest, obj: Identity, form: forms.Form, change: bool) -> None:
        if change:
            obj.save(update_fields=[*self.editable_fields, "updated_at"])
            return
        spec = {f: form.cleaned_data.get(f) for f in ("key", "profile", "addressability", "display_name")}
        spec |= {f: form.cleaned_data.get(f) for f in ("labels", "context", "initial_message")}
        created = services.identity_create(mob=form.cleaned_data["mob"], spec=spec)
        obj.pk = created.pk
        obj._state.adding = False

    def _each(self, request: HttpRequest, queryset: QuerySet[Identity], label: str, call) -> None:
        done = 0
        for identity in queryset.select_related("mob__workspace", "mob__active_revision"):
            try:
                call(identity)
                done += 1
            except LashOpsError as exc:
                self.message_user(request, f"{identity.key}: {exc.code}: {exc.message}", level=messages.ERROR)
        self.message_user(request, f"{label}: {done} identity(ies).")

    @admin.action(description="Materialize (retry if broken)")
    def materialize(self, request: HttpRequest, queryset: QuerySet[Identity]) -> None:
        self._each(
            request, queryset, "Materialized", lambda i: services.identity_materialize(identity=i, retry_broken=True)
        )

    @admin.action(description="Retire")
    def retire(self, request: HttpRequest, queryset: QuerySet[Identity]) -> None:
        self._each(request, queryset, "Retired", lambda i: services.identity_retire(identity=i))

    @admin.action(description="Reset (new generation and session)")
    def reset(self, request: HttpRequest, queryset: QuerySet[Identity]) -> None:
        self._each(request, queryset, "Reset", lambda i: services.identity_reset(identity=i))

    @admin.action(description="Reload (same session)")
    def reload(self, request: HttpRequest, queryset: QuerySet[Identity]) -> None:
        self._each(request, queryset, "Reloaded", lambda i: services.identity_reload(identity=i))

    @admin.action(description="Warm in the background")
    def warm(self, request: HttpRequest, queryset: QuerySet[Identity]) -> None:
        from lashops.core.runner import dispatch
        from mobs_app.tasks import identity_warm_task

        for identity in queryset.filter(state=Identity.State.DORMANT):
            dispatch(identity_warm_task, identity_pk=identity.pk)
        self.message_user(request, "Warming started for the dormant identities selected.")


class EdgeForm(forms.ModelForm):
    """Endpoints in either order: stored canonical (a < b), as the service would."""

    class Meta:
        model = Edge
        fields = ("mob", "a", "b")

    def clean(self) -> dict:
        data: dict[str, Any] = super().clean()  # type: ignore[assignment]  # a ModelForm's clean returns its cleaned_data
        if data.get("a") and data.get("b"):
            try:
                data["a"], data["b"] = canonical(data["a"], data["b"])
            except LashOpsError as exc:
                raise forms.ValidationError(exc.message) from None
            self.instance.a, self.instance.b = data["a"], data["b"]
        return data


@admin.register(Edge)
class EdgeAdmin(WorkspaceScopedAdmin):
    """Operator edges are added here (edge_add) and removed here (edge_remove); reconcile never
    removes them. Managed edges (wiring, provider) are reconcile's to remove."""

    workspace_path = "mob__workspace"
    deletion = "service"
    editable_fields = ()

    form = EdgeForm
    list_display = ("a", "b", "source", "mob", "created_at")
    list_filter = ("source", "mob")
    list_select_related = ("mob",)
    search_fields = ("a", "b")
    raw_id_fields = ("mob",)
    actions = ["reconcile"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def delete_object(self, request: HttpRequest, obj: Edge) -> bool:
        if obj.source != Edge.Source.OPERATOR:
            self.report_refusal(request, obj, f"a {obj.source} edge is managed: reconcile the mob's edges instead")
            return False
        services.edge_remove(mob=obj.mob, a=obj.a, b=obj.b)
        self.message_user(request, f"Removed operator edge {obj.a} - {obj.b} of mob {obj.mob}.")
        return True

    def save_model(self, request: HttpRequest, obj: Edge, form: forms.Form, change: bool) -> None:
        edge = services.edge_add(mob=obj.mob, a=obj.a, b=obj.b)
        obj.pk, obj.a, obj.b, obj.source = edge.pk, edge.a, edge.b, edge.source
        obj._state.adding = False

    @admin.action(description="Reconcile edges of these mobs")
    def reconcile(self, request: HttpRequest, queryset: QuerySet[Edge]) -> None:
        for mob in Mob.objects.filter(pk__in=queryset.values("mob")).select_related("workspace", "active_revision"):
            report = services.edges_reconcile(mob=mob)
            self.message_user(request, f"{mob}: +{len(report['added'])} -{len(report['removed'])} edges.")


@admin.register(IdentityLease)
class IdentityLeaseAdmin(LeaseScopedAdmin):
    list_display = ("key", "holder", "token", "acquired_at", "expires_at")
    search_fields = ("key", "holder")
    readonly_fields = ("scope", "key", "holder", "token", "acquired_at", "expires_at")
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(scope=SCOPE)

    @admin.action(description="Revoke (fences the holder out)")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        for lease in queryset:
            core_services.lease_revoke(scope=lease.scope, key=lease.key)
        self.message_user(request, f"Revoked {queryset.count()} identity lease(s).")


class ReadOnlyAdmin(WorkspaceScopedAdmin):
    workspace_path = "mob__workspace"
    read_only = True
    deletion = "never"
    show_full_result_count = False


@admin.register(ConsoleFrame)
class ConsoleFrameAdmin(ReadOnlyAdmin):
    list_display = (
        "seq",
        "mob",
        "identity",
        "kind",
        "status",
        "delivery_attempts",
        "next_attempt_at",
        "frame_version",
        "created_at",
    )
    list_filter = ("status", "kind", "mob")
    list_select_related = ("mob",)
    search_fields = ("identity", "dedupe_key", "session_id")
    readonly_fields = (
        "mob",
        "seq",
        "dedupe_key",
        "identity",
        "session_id",
        "kind",
        "status",
        "delivery_attempts",
        "next_attempt_at",
        "last_error",
        "frame_version",
        "source_kind",
        "payload",
        "created_at",
        "updated_at",
    )
    actions = ["retry_now"]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("mobs_app.change_consoleframe")

    @admin.action(description="Retry delivery now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[ConsoleFrame]) -> None:
        done = 0
        for frame in queryset.select_related("mob__workspace").order_by("mob", "seq"):
            try:
                delivery.console_frame_retry(frame=frame)
                done += 1
            except LashOpsError as exc:
                message = f"Frame {frame.cursor} of mob {frame.mob}: {exc.code}: {exc.message}"
                self.message_user(request, message, messages.ERROR)
        self.message_user(request, f"Delivery retried now: {done} frame(s).")


@admin.register(MobEvent)
class MobEventAdmin(ReadOnlyAdmin):
    list_display = ("seq", "mob", "kind", "identity", "ts")
    list_filter = ("kind", "mob")
    list_select_related = ("mob",)
    search_fields = ("identity", "kind")
    readonly_fields = ("mob", "seq", "kind", "identity", "data", "ts")


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ("workspace", "mob_ref", "transport")

    def clean_transport(self) -> str:
        try:
            parse_transport(self.cleaned_data["transport"])
        except LashOpsError as exc:
            raise forms.ValidationError(exc.message) from None
        return self.cleaned_data["transport"]


@admin.register(Contact)
class ContactAdmin(WorkspaceScopedAdmin):
    workspace_path = "workspace"
    deletion = "plain"
    editable_fields = ("transport",)
    form = ContactForm
    list_display = ("mob_ref", "transport", "workspace")
    list_filter = ("workspace",)
    list_select_related = ("workspace",)
    search_fields = ("mob_ref",)
