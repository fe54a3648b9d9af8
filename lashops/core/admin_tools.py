"""Admin pieces shared by every app: workspace scoping and safe-by-construction editing.

Every registered ``ModelAdmin`` (and every inline) derives from ``WorkspaceScopedAdmin`` (a
system check, ``lashops.E101``, and ``tests/core/test_admin_scoping.py`` refuse one that does
not). For staff who are not superusers the admin shows only the workspaces they are members of:

* querysets (changelists, change, delete and history pages, actions, autocomplete, raw-id
  popups) are filtered by ``workspace_path``, the lookup from the model to its ``Workspace``;
  another workspace's change page answers the admin's "does not exist" redirect;
* every model choice field of a form (foreign keys, raw-id and autocomplete fields, choice
  fields a form declares itself) offers, and validates against, in-scope rows only;
* related-field list filters offer in-scope rows only.

Rows that belong to no workspace (``workspace_path = None``) are decided per model with
``global_rows``: ``"read"`` (shared configuration, e.g. model prices: non-superusers may look,
only superusers change) or ``"hidden"`` (process-wide state that names every workspace's work,
such as worker heartbeats, and the user and group tables: superusers only).

Safety (what may change through the admin) is declared, never defaulted:
* ``read_only = True``: journals, events, effects, leases, usage, turns, ledger rows: no add, no
  change, no delete (operators act on them with actions that call services);
* otherwise ``editable_fields``: the explicit allowlist of fields a change form may edit;
  everything else (ids, workspace, status, tokens, cursors) is shown read-only;
* ``deletion``: ``"never"`` (no Delete button, no "delete selected"), ``"service"`` (the Delete
  button and the bulk action both call ``delete_object``, which calls the domain's delete
  service and reports) or ``"plain"`` (configuration rows with no domain rule; the ORM deletes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

Deletion = Literal["never", "service", "plain"]
GlobalRows = Literal["read", "hidden"]

_UNSET: Any = object()
_REQUEST_CACHE = "_lashops_admin_workspace_ids"

# Lease rows name their subject only by (scope, key): each app says which keys of its scopes
# belong to a set of workspaces (a values() queryset of keys), so the lease admins can filter.
_lease_keys: dict[str, Callable[[list[int]], QuerySet]] = {}


def register_lease_keys(scope: str, keys_for: Callable[[list[int]], QuerySet]) -> None:
    """``keys_for(workspace_ids)`` answers a ``values_list`` queryset of the lease keys of
    ``scope`` whose subject belongs to one of those workspaces (used as a subquery)."""
    _lease_keys[scope] = keys_for


def lease_scope_q(workspace_ids: list[int]) -> Q:
    """Leases whose subject belongs to ``workspace_ids``; a lease of an unknown scope matches
    nothing (only superusers see it)."""
    q = Q(pk__in=[])
    for scope, keys_for in _lease_keys.items():
        q |= Q(scope=scope, key__in=keys_for(workspace_ids))
    return q


def member_workspace_ids(request: HttpRequest) -> list[int] | None:
    """The workspaces the request's user may see in the admin; ``None`` means every one
    (superusers). Computed once per request."""
    cached = getattr(request, _REQUEST_CACHE, _UNSET)
    if cached is not _UNSET:
        return cached
    user = request.user
    if user.is_active and user.is_superuser:
        ids = None
    elif not user.is_authenticated:
        ids = []
    else:
        ids = list(user.lashops_workspaces.values_list("pk", flat=True))
    setattr(request, _REQUEST_CACHE, ids)
    return ids


def scoped(request: HttpRequest, queryset: QuerySet, site: admin.AdminSite | None = None) -> QuerySet:
    """``queryset`` cut down to what the request's user may see, by the rules of the model's
    registered admin. A model with no registered admin is scoped by its ``workspace`` field, or
    shown to superusers only (fail closed)."""
    if member_workspace_ids(request) is None:
        return queryset
    model_admin = (site or admin.site)._registry.get(queryset.model)
    if isinstance(model_admin, WorkspaceScopedAdmin):
        return model_admin.scope_queryset(request, queryset)
    if any(f.name == "workspace" and f.is_relation for f in queryset.model._meta.get_fields()):
        return queryset.filter(workspace__in=member_workspace_ids(request))
    return queryset.none()


class ScopedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A related-field filter that offers only rows the user may see (another workspace, or its
    mobs, never appears as a choice)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        related = field.remote_field.model
        ordering = self.field_admin_ordering(field, request, model_admin)
        queryset = scoped(request, related._default_manager.all(), model_admin.admin_site)
        if ordering:
            queryset = queryset.order_by(*ordering)
        return [(obj.pk, str(obj)) for obj in queryset[:500]]


def _scope_form_fields(request: HttpRequest, form_class: type[forms.ModelForm], site: admin.AdminSite) -> None:
    """Every model choice field of ``form_class`` offers and accepts in-scope rows only. Fields
    are copied first: declared fields are shared with the form's base class across requests."""
    if member_workspace_ids(request) is None:
        return
    for name, field in list(form_class.base_fields.items()):
        if isinstance(field, forms.ModelChoiceField):  # ModelMultipleChoiceField is a subclass
            field = copy.deepcopy(field)
            field.queryset = scoped(request, field.queryset, site)  # type: ignore[arg-type]  # a model form's choice field has one
            form_class.base_fields[name] = field


class _Scoping:
    """The scoping half, shared by ``WorkspaceScopedAdmin`` and ``WorkspaceScopedInline``."""

    workspace_path: ClassVar[str | None] = _UNSET
    global_rows: ClassVar[GlobalRows | None] = None

    def scope_queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Rows of this model the request's user may see."""
        ids = member_workspace_ids(request)
        if ids is None:
            return queryset
        if self.workspace_path is None:
            return queryset if self.global_rows == "read" else queryset.none()
        return queryset.filter(**{f"{self.workspace_path}__in": ids})

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return self.scope_queryset(request, super().get_queryset(request))  # type: ignore[misc]  # a mixin: super() is the ModelAdmin or inline it is mixed into

    def _global_limited(self, request: HttpRequest) -> bool:
        return self.workspace_path is None and member_workspace_ids(request) is not None

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if self._global_limited(request) and self.global_rows != "read":
            return False
        return super().has_view_permission(request, obj)  # type: ignore[misc]  # a mixin: super() is the ModelAdmin or inline it is mixed into

    def has_module_permission(self, request: HttpRequest) -> bool:
        if self._global_limited(request) and self.global_rows != "read":
            return False
        return super().has_module_permission(request)  # type: ignore[misc]  # a mixin: super() is the ModelAdmin or inline it is mixed into


class WorkspaceScopedAdmin(_Scoping, admin.ModelAdmin):
    """The one base of every LashOps ``ModelAdmin``: workspace scoping and declared safety
    (see the module docstring). A subclass must set ``workspace_path`` (``None`` with
    ``global_rows`` for workspace-less tables), ``deletion``, and either ``read_only = True`` or
    ``editable_fields``."""

    read_only: ClassVar[bool] = False
    editable_fields: ClassVar[tuple[str, ...]] = _UNSET
    deletion: ClassVar[Deletion] = _UNSET

    # --- scoping ---------------------------------------------------------------------------

    def get_list_filter(self, request: HttpRequest) -> list:
        return [_scoped_filter(self.model, entry) for entry in super().get_list_filter(request)]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        _scope_form_fields(request, form, self.admin_site)
        return form

    def get_changelist_formset(self, request: HttpRequest, **kwargs: Any) -> Any:
        formset = super().get_changelist_formset(request, **kwargs)
        _scope_form_fields(request, formset.form, self.admin_site)
        return formset

    # --- safety ----------------------------------------------------------------------------

    def _writable(self, request: HttpRequest) -> bool:
        return not self.read_only and not (self._global_limited(request) and self.global_rows == "read")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._writable(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._writable(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if self.read_only or self.deletion == "never" or not self._writable(request):
            return False
        return super().has_delete_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        declared = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return declared
        editable = () if self.read_only else self.editable_fields
        return declared + tuple(f for f in self._form_field_names() if f not in editable and f not in declared)

    def _form_field_names(self) -> list[str]:
        """Every name a change form could edit: the model's editable fields, the form's own
        fields and ``fields``. (Not ``get_fields``: it builds the form, which asks for the
        read-only fields.)"""
        names = [
            f.name
            for f in self.model._meta.get_fields()
            if not f.auto_created and getattr(f, "editable", False) and (f.concrete or f.many_to_many)
        ]
        names += [n for n in getattr(self.form, "base_fields", {}) if n not in names]
        names += [n for n in flatten_fields(self.fields or ()) if n not in names]
        return names

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if self.read_only or self.deletion == "never":
            actions.pop("delete_selected", None)
        return actions

    def delete_object(self, request: HttpRequest, obj: Any) -> bool:
        """Delete ``obj`` through the domain's service and report; ``False`` when the service
        refused (the refusal is reported). Required when ``deletion == "service"``."""
        raise NotImplementedError(f"{type(self).__name__} declares deletion='service' but no delete_object")

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if self.deletion == "service":
            # The service decides what goes with the object (turns, nodes, journal rows that
            # are read-only here); the user needs only the delete permission of this model.
            perms_needed = set()
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        if self.deletion == "service":
            self.delete_object(request, obj)
            return
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        if self.deletion == "service":
            for obj in list(queryset):
                self.delete_object(request, obj)
            return
        super().delete_queryset(request, queryset)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> Any:
        if self.deletion == "service" and self.model._default_manager.filter(pk=obj_id).exists():
            # The service refused (and said why): back to the object, not "deleted successfully".
            from django.http import HttpResponseRedirect
            from django.urls import reverse

            opts = self.opts
            return HttpResponseRedirect(
                reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj_id], current_app=self.admin_site.name
                )
            )
        return super().response_delete(request, obj_display, obj_id)

    def report_refusal(self, request: HttpRequest, obj: Any, message: str) -> None:
        self.message_user(request, f"{obj}: {message}", level=messages.ERROR)


class WorkspaceScopedInline(_Scoping):
    """Scoping for inlines: the rows shown and every choice of their forms."""

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)  # type: ignore[misc]  # a mixin: super() is the ModelAdmin or inline it is mixed into
        _scope_form_fields(request, formset.form, self.admin_site)  # type: ignore[attr-defined]  # the inline's
        return formset


class ReadOnlyInline(WorkspaceScopedInline, admin.TabularInline):
    """A child table shown on its parent's page: never added to, edited or deleted there."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> tuple:
        # Shown, never a form field: a non-editable column (created_at) in ``fields`` is a FieldError.
        return tuple(self.fields or ())


def flatten_fields(fields: Iterable[Any]) -> list[str]:
    """``get_fields`` entries, with tuples (several fields on one line) flattened."""
    flat: list[str] = []
    for entry in fields:
        if isinstance(entry, list | tuple):
            flat.extend(flatten_fields(entry))
        else:
            flat.append(entry)
    return flat


def _scoped_filter(model: type[Model], entry: Any) -> Any:
    """A ``list_filter`` entry with related-field filters replaced by the scoped one."""
    if isinstance(entry, str):
        path, filter_class = entry, None
    elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
        path, filter_class = entry
    else:
        return entry  # a SimpleListFilter subclass: its own lookups decide
    if filter_class is not None and not issubclass(filter_class, admin.RelatedFieldListFilter):
        return entry
    field = get_fields_from_path(model, path)[-1]
    if not field.is_relation:
        return entry
    return (path, ScopedRelatedFieldListFilter)


def unscoped_admins(site: admin.AdminSite) -> list[str]:
    """Registered admins (or their inlines) that are not workspace-scoped or leave a safety
    rule undeclared: what ``lashops.E101`` reports."""
    problems: list[str] = []
    for model, model_admin in site._registry.items():
        label = f"{model._meta.label} ({type(model_admin).__name__})"
        if not isinstance(model_admin, WorkspaceScopedAdmin):
            problems.append(f"{label}: not a WorkspaceScopedAdmin")
            continue
        if model_admin.workspace_path is _UNSET:
            problems.append(f"{label}: workspace_path is not declared")
        elif model_admin.workspace_path is None and model_admin.global_rows not in ("read", "hidden"):
            problems.append(f"{label}: workspace-less rows need global_rows 'read' or 'hidden'")
        if model_admin.deletion not in ("never", "service", "plain"):
            problems.append(f"{label}: deletion is not declared")
        if model_admin.deletion == "service" and type(model_admin).delete_object is WorkspaceScopedAdmin.delete_object:
            problems.append(f"{label}: deletion='service' without delete_object")
        if not model_admin.read_only and model_admin.editable_fields is _UNSET:
            problems.append(f"{label}: neither read_only nor an editable_fields allowlist")
        for entry in model_admin.list_filter:
            path = cast(
                "str | None", entry if isinstance(entry, str) else entry[0] if isinstance(entry, tuple) else None
            )
            if path and "__" in path and not get_fields_from_path(model, path)[-1].is_relation:
                # Django lists such values from the related table, unscoped.
                problems.append(f"{label}: list filter {path!r} reads another table's values unscoped")
        for inline in model_admin.inlines:
            if not issubclass(inline, WorkspaceScopedInline):
                problems.append(f"{label}: inline {inline.__name__} is not a WorkspaceScopedInline")
            elif inline.workspace_path is _UNSET:
                problems.append(f"{label}: inline {inline.__name__} has no workspace_path")
    return problems


def check_admin_scoping(app_configs: Any = None, **kwargs: Any) -> list:
    """System check ``lashops.E101``: every registered admin is workspace-scoped and safe."""
    from django.core import checks

    return [checks.Error(problem, id="lashops.E101") for problem in unscoped_admins(admin.site)]
