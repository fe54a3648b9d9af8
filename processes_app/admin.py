"""Admin for processes and triggers. Actions call services and report with message_user."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from lashops.core.admin_tools import ReadOnlyInline, WorkspaceScopedAdmin, register_lease_keys
from lashops.core.errors import LashOpsError
from processes_app import services, triggers
from processes_app.models import (
    CronSchedule,
    Process,
    ProcessEvent,
    ProcessGrant,
    TriggerDelivery,
    TriggerEvent,
    TriggerOccurrence,
    TriggerSubscription,
)
from processes_app.selectors import LEASE_SCOPE, process_lease

register_lease_keys(LEASE_SCOPE, lambda ids: Process.objects.filter(workspace__in=ids).values("pk"))


class ProcessEventInline(ReadOnlyInline):
    model = ProcessEvent
    workspace_path = "process__workspace"
    fields = ("seq", "type", "data", "ts")
    ordering = ("seq",)
    show_change_link = False


class ProcessGrantInline(ReadOnlyInline):
    """Grants are given by process_grant (the API) and revoked by the service, never typed here:
    a free-text session id could name another workspace's session."""

    model = ProcessGrant
    workspace_path = "process__workspace"
    fields = ("session_id", "granted_at", "revoked_at")
    show_change_link = False


class SignalForm(forms.Form):
    name = forms.CharField(max_length=100)
    payload = forms.CharField(widget=forms.Textarea(attrs={"rows": 6, "cols": 60}), initial="{}", required=False)

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"].strip() or "null"
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None


class CompleteForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("completed", "completed (with output)"), ("failed", "failed (with error)")])
    output = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60}), initial="null", required=False, help_text="JSON"
    )
    error_code = forms.CharField(max_length=100, required=False)
    error_message = forms.CharField(max_length=2000, required=False)

    def clean_output(self) -> Any:
        text = self.cleaned_data["output"].strip() or "null"
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean()  # type: ignore[assignment]  # a ModelForm's clean returns its cleaned_data
        if data.get("outcome") == "failed" and not data.get("error_code"):
            self.add_error("error_code", "a failure needs an error code")
        return data

    def completion(self) -> dict[str, Any]:
        """The ``process_complete`` arguments this form stands for."""
        data = self.cleaned_data
        if data["outcome"] == "failed":
            return {"error": {"code": data["error_code"], "message": data["error_message"]}}
        return {"output": data["output"]}


def _each(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, fn: Any, verb: str) -> None:
    done, failed = 0, []
    for proc in queryset.select_related("workspace"):
        try:
            fn(proc)
            done += 1
        except LashOpsError as exc:
            failed.append(f"{proc.pk}: {exc.message}")
    modeladmin.message_user(request, f"{verb} {done} process(es).")
    if failed:
        modeladmin.message_user(request, "; ".join(failed), level=messages.WARNING)


def _form_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    form_class: type,
    apply: Any,
    action: str,
    title: str,
    intro: str,
    submit: str,
) -> HttpResponse | None:
    """An admin action that asks for a form first: once it is valid, ``apply(form)`` gives the
    operation and the verb ``_each`` runs and reports over the selected processes."""
    if "apply" in request.POST:
        form = form_class(request.POST)
        if form.is_valid():
            _each(modeladmin, request, queryset, *apply(form))
            return None
    else:
        form = form_class()
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "submit": submit,
        "form": form,
        "processes": queryset,
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,  # type: ignore[attr-defined]  # loaded with admin
    }
    return TemplateResponse(request, "admin/processes_app/form_action.html", context)


@admin.register(Process)
class ProcessAdmin(WorkspaceScopedAdmin):
    """Processes are started through the API, a trigger or a definition, and acted on with the
    actions below (services); their state is never edited and they are never deleted here
    (cancel or abandon them; the retention prune removes finished ones)."""

    workspace_path = "workspace"
    read_only = True
    deletion = "never"
    list_display = ("id", "definition_name", "kind", "status", "wait_kind", "disposition", "workspace", "created_at")
    list_filter = ("status", "kind", "disposition", "definition_name", "wait_kind")
    list_select_related = ("workspace",)
    search_fields = ("id", "definition_name", "wake_session_id")
    raw_id_fields = ("parent",)
    show_full_result_count = False
    inlines = [ProcessGrantInline, ProcessEventInline]
    actions = ["cancel_processes", "signal_processes", "complete_processes", "redrive_processes", "abandon_processes"]
    readonly_fields = (
        "id",
        "workspace",
        "kind",
        "definition_name",
        "definition_version",
        "input",
        "disposition",
        "registration_hash",
        "status",
        "wait_kind",
        "wait_until",
        "wait_signal",
        "wait_child",
        "output",
        "error",
        "provenance",
        "wake_session_id",
        "parent",
        "first_started_at",
        "first_started_by",
        "cancel_requested_at",
        "cancel_cascade",
        "abandon_requested_at",
        "runnable_since",
        "run_count",
        "event_seq",
        "created_at",
        "updated_at",
        "finished_at",
        "lease_holder",
        "lease_token",
        "lease_expires_at",
    )

    def _lease(self, obj: Process) -> Any:
        if not hasattr(obj, "_lease_cache"):
            obj._lease_cache = process_lease(process_id=obj.pk)  # type: ignore[attr-defined]  # a per-row cache
        return obj._lease_cache  # type: ignore[attr-defined]

    @admin.display(description="lease holder")
    def lease_holder(self, obj: Process) -> str:
        lease = self._lease(obj)
        return lease.holder if lease else ""

    @admin.display(description="fencing token")
    def lease_token(self, obj: Process) -> Any:
        lease = self._lease(obj)
        return lease.token if lease else None

    @admin.display(description="lease expires")
    def lease_expires_at(self, obj: Process) -> Any:
        lease = self._lease(obj)
        return lease.expires_at if lease else None

    @admin.action(description="Cancel selected processes")
    def cancel_processes(self, request: HttpRequest, queryset: QuerySet[Process]) -> None:
        _each(
            self,
            request,
            queryset,
            lambda p: services.process_cancel(workspace=p.workspace, process_id=p.pk, reason="admin"),
            "Cancel requested for",
        )

    @admin.action(description="Re-drive selected processes")
    def redrive_processes(self, request: HttpRequest, queryset: QuerySet[Process]) -> None:
        _each(
            self,
            request,
            queryset,
            lambda p: services.process_redrive(workspace=p.workspace, process_id=p.pk),
            "Re-drove",
        )

    @admin.action(description="Abandon selected processes (reconciled once no live lease holds them)")
    def abandon_processes(self, request: HttpRequest, queryset: QuerySet[Process]) -> None:
        _each(
            self,
            request,
            queryset,
            lambda p: services.process_abandon_request(workspace=p.workspace, process_id=p.pk),
            "Abandon requested for",
        )

    @admin.action(description="Send a signal to selected processes…")
    def signal_processes(self, request: HttpRequest, queryset: QuerySet[Process]) -> HttpResponse | None:
        def apply(form: SignalForm) -> tuple[Any, str]:
            name, payload = form.cleaned_data["name"], form.cleaned_data["payload"]
            return (
                lambda p: services.process_signal(workspace=p.workspace, process_id=p.pk, name=name, payload=payload),
                f"Sent {name!r} to",
            )

        return _form_action(
            self,
            request,
            queryset,
            form_class=SignalForm,
            apply=apply,
            action="signal_processes",
            title="Send a signal",
            intro=f"Send a signal to {queryset.count()} process(es):",
            submit="Send signal",
        )

    @admin.action(description="Complete selected external processes…")
    def complete_processes(self, request: HttpRequest, queryset: QuerySet[Process]) -> HttpResponse | None:
        def apply(form: CompleteForm) -> tuple[Any, str]:
            completion = form.completion()
            return (
                lambda p: services.process_complete(
                    workspace=p.workspace, process_id=p.pk, via="admin", path="form", **completion
                ),
                form.cleaned_data["outcome"].capitalize(),
            )

        return _form_action(
            self,
            request,
            queryset,
            form_class=CompleteForm,
            apply=apply,
            action="complete_processes",
            title="Complete external processes",
            intro=(
                f"Complete {queryset.count()} externally owned process(es) with the same result. A process waiting "
                "on one of them continues; a process that is not externally owned, or has already ended, is left "
                "as it is."
            ),
            submit="Complete",
        )


def _check_schema(schema: Any) -> None:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema or {})
    except jsonschema.SchemaError as exc:
        raise LashOpsError(f"invalid payload schema: {exc.message}") from None


class ServiceValidatedForm(forms.ModelForm):
    """Checks what the trigger services check, so that their refusals are form errors: the event
    (and the session to wake) belong to the row's workspace, the definition exists, the payload
    schema and the cron expression are valid."""

    def clean(self) -> dict[str, Any]:
        from django.apps import apps

        from processes_app.definitions import require_definition

        data: dict[str, Any] = super().clean()  # type: ignore[assignment]  # a ModelForm's clean returns its cleaned_data
        workspace = data.get("workspace") or (self.instance.workspace if self.instance.workspace_id else None)
        event = data.get("event")
        if workspace is not None and event is not None and event.workspace_id != workspace.pk:
            self.add_error("event", "this event belongs to another workspace")
        wake = data.get("wake_session_id")
        if workspace is not None and wake:
            sessions = apps.get_model("sessions_app", "Session")._default_manager
            if not sessions.filter(pk=wake, workspace=workspace).exists():
                self.add_error("wake_session_id", "no such session in this workspace")
        checks = {
            "definition_name": require_definition,
            "cron": triggers.parse_cron,
            "payload_schema": _check_schema,
        }
        for name, check in checks.items():
            if name in self.fields and data.get(name) not in (None, ""):
                try:
                    check(data[name])
                except LashOpsError as exc:
                    self.add_error(name, exc.message)
        return data


@admin.register(TriggerEvent)
class TriggerEventAdmin(WorkspaceScopedAdmin):
    """Declared and updated through trigger_event_declare (which checks the payload schema)."""

    workspace_path = "workspace"
    deletion = "plain"
    editable_fields = ("description", "payload_schema")
    form = ServiceValidatedForm
    list_display = ("name", "workspace", "description", "created_at")
    list_filter = ("workspace",)
    list_select_related = ("workspace",)
    search_fields = ("name", "description")
    readonly_fields = ("created_at",)

    def save_model(self, request: HttpRequest, obj: TriggerEvent, form: Any, change: bool) -> None:
        event = triggers.trigger_event_declare(
            workspace=obj.workspace, name=obj.name, payload_schema=obj.payload_schema, description=obj.description
        )
        obj.pk, obj.created_at = event.pk, event.created_at
        obj._state.adding = False


@admin.register(TriggerSubscription)
class TriggerSubscriptionAdmin(WorkspaceScopedAdmin):
    """Created through trigger_subscribe; afterwards only its name and whether it is enabled
    (trigger_subscription_set_enabled) change."""

    workspace_path = "workspace"
    deletion = "plain"
    editable_fields = ("name", "enabled")
    form = ServiceValidatedForm
    list_display = ("__str__", "event", "definition_name", "disposition", "wake_session_id", "enabled", "workspace")
    list_filter = ("enabled", "disposition", "workspace")
    list_select_related = ("event", "workspace")
    search_fields = ("name", "definition_name", "event__name", "wake_session_id")
    readonly_fields = ("created_at",)
    raw_id_fields = ("event",)

    def save_model(self, request: HttpRequest, obj: TriggerSubscription, form: Any, change: bool) -> None:
        if change:
            obj.save(update_fields=["name"])
            triggers.trigger_subscription_set_enabled(
                workspace=obj.workspace, subscription_id=obj.pk, enabled=obj.enabled
            )
            return
        created = triggers.trigger_subscribe(
            workspace=obj.workspace,
            event_name=obj.event.name,
            definition=obj.definition_name,
            input_template=obj.input_template or None,
            wake_session_id=obj.wake_session_id,
            disposition=obj.disposition,
            name=obj.name,
        )
        if not obj.enabled:
            triggers.trigger_subscription_set_enabled(
                workspace=obj.workspace, subscription_id=created.pk, enabled=False
            )
        obj.pk, obj.created_at = created.pk, created.created_at
        obj._state.adding = False


class TriggerDeliveryInline(ReadOnlyInline):
    model = TriggerDelivery
    workspace_path = "occurrence__workspace"
    fields = ("subscription", "process_id", "created_at")
    show_change_link = False


@admin.register(TriggerOccurrence)
class TriggerOccurrenceAdmin(WorkspaceScopedAdmin):
    workspace_path = "workspace"
    read_only = True
    deletion = "never"
    list_display = ("occurrence_id", "event", "source", "workspace", "created_at")
    list_filter = ("source", "workspace")
    list_select_related = ("event", "workspace")
    search_fields = ("occurrence_id", "event__name")
    readonly_fields = ("workspace", "event", "occurrence_id", "payload", "source", "created_at")
    show_full_result_count = False
    inlines = [TriggerDeliveryInline]  # occurrences are emitted through the API or by schedules


@admin.register(CronSchedule)
class CronScheduleAdmin(WorkspaceScopedAdmin):
    """Saved through schedule_save (keyed by name; it computes the next tick)."""

    workspace_path = "workspace"
    deletion = "plain"
    editable_fields = ("cron", "payload", "enabled")
    form = ServiceValidatedForm
    list_display = ("name", "event", "cron", "enabled", "next_run_at", "last_run_at", "workspace")
    list_filter = ("enabled", "workspace")
    list_select_related = ("event", "workspace")
    search_fields = ("name", "event__name")
    readonly_fields = ("next_run_at", "last_run_at")

    def save_model(self, request: HttpRequest, obj: CronSchedule, form: Any, change: bool) -> None:
        saved = triggers.schedule_save(
            workspace=obj.workspace,
            name=obj.name,
            event_name=obj.event.name,
            cron=obj.cron,
            payload=obj.payload,
            enabled=obj.enabled,
        )
        obj.pk, obj.next_run_at = saved.pk, saved.next_run_at
        obj._state.adding = False
