"""The admin is scoped by workspace membership for staff who are not superusers.

A staff user who belongs to workspace A (aa1a) only, with every model permission, walks EVERY
model registered in the admin site (``admin.site._registry``: a model registered later is
walked too, and the world builder below must give it rows or the walk fails) while workspace B
(zz9b) has rows in each: B's rows never appear in a changelist, a search, an autocomplete, a
list filter or a form's choices; B's change, delete and history pages do not open; actions
posted with B's ids change nothing of B's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, Permission
from django.db.models import Model
from django.urls import reverse
from django.utils import timezone

from tests.support.mobs import MOB_TOML
from tests.support.scripted import ANSWER, CALC, scripted

pytestmark = pytest.mark.django_db

A, B = "aa1a", "zz9b"  # every string of B's world carries "zz9b"


def _pks(model: type[Model]) -> set[Any]:
    return set(model._default_manager.values_list("pk", flat=True))


def _world(tag: str, django_user_model: Any) -> Any:
    """One workspace with a row in every table the admin shows."""
    from lashops.core.models import Lease
    from lashops.core.services import api_key_create, workspace_create
    from mobs_app.journal import console_append
    from mobs_app.models import Contact
    from mobs_app.services import identity_create, identity_materialize, mob_load
    from processes_app import triggers
    from processes_app.models import ProcessKind, TriggerOccurrence, TriggerSubscription
    from processes_app.services import process_start
    from sessions_app.models import Session, SessionCommand
    from sessions_app.services import attachment_put, input_enqueue, session_open, turn_start

    ws = workspace_create(slug=f"{tag}-ws", name=f"{tag} workspace")
    member = django_user_model.objects.create_user(f"{tag}-member", password=None)
    ws.members.add(member)
    api_key_create(workspace=ws, name=f"{tag}-key")

    session, _ = session_open(workspace=ws, session_id=f"{tag}-s1", model=scripted(CALC, ANSWER))
    turn_start(session=session, text=f"{tag} what is 6*7?")  # turn, nodes, usage, effects, events, lease
    Session.objects.filter(pk=session.pk).update(active_turn_id="busy")  # so the input stays queued
    input_enqueue(session=session, text=f"{tag} later", source_key=f"{tag}-p1")
    Session.objects.filter(pk=session.pk).update(active_turn_id="")
    SessionCommand.objects.create(session=session, kind="reset_session", source_key=f"{tag}-c1", reason=tag)
    attachment_put(session=session, content=f"{tag} blob".encode(), content_type="text/plain", filename=f"{tag}.txt")

    proc, _ = process_start(
        workspace=ws,
        process_id=f"{tag}-p1",
        kind=ProcessKind.EXTERNAL,
        disposition="externally_owned",
        input={"t": tag},
    )
    Lease.objects.create(scope="process", key=proc.pk, holder=f"{tag}-holder", token=1)

    event = triggers.trigger_event_declare(workspace=ws, name=f"{tag}-evt", description=tag)
    TriggerSubscription.objects.create(workspace=ws, event=event, name=f"{tag}-sub", definition_name=f"{tag}-def")
    TriggerOccurrence.objects.create(workspace=ws, event=event, occurrence_id=f"{tag}-o1", source=tag)
    triggers.schedule_save(workspace=ws, name=f"{tag}-cron", event_name=event.name, cron="0 * * * *")

    mob = mob_load(workspace=ws, source=MOB_TOML.replace('id = "desk"', f'id = "{tag}-desk"')).mob
    identity_create(mob=mob, spec={"key": f"{tag}-lead", "profile": "lead"})
    alice = identity_create(mob=mob, spec={"key": f"{tag}-alice", "profile": "specialist"})
    identity_materialize(identity=alice)  # continuity, identity lease, ledger
    console_append(mob=mob, kind="send", identity=alice.key, payload={"text": tag}, dedupe_key=f"{tag}-f1")
    Contact.objects.create(workspace=ws, mob_ref=f"{tag}-far", transport="inproc://x")
    return ws


@pytest.fixture
def world(django_user_model, settings, tmp_path, recording_sessions):
    """A's world, then B's; B's rows are what B's world added to each registered model."""
    from lashops.core.models import WorkerHeartbeat
    from sessions_app.models import ModelPrice

    settings.MEDIA_ROOT = str(tmp_path)
    now = timezone.now()
    ModelPrice.objects.create(provider="scripted", model="scripted-1", input_per_mtok=3, output_per_mtok=15)
    WorkerHeartbeat.objects.create(
        worker_id="w-1", kind="celery", host="h", pid=1, holder_prefix="h:1", started_at=now, last_beat_at=now
    )
    Group.objects.create(name="operators")
    ws_a = _world(A, django_user_model)
    before = {model: _pks(model) for model in admin.site._registry}
    ws_b = _world(B, django_user_model)
    b_rows = {model: _pks(model) - before[model] for model in admin.site._registry}
    staff = django_user_model.objects.create_user("a-staff", password=None, is_staff=True)
    staff.user_permissions.set(Permission.objects.all())
    ws_a.members.add(staff)
    return {"a": ws_a, "b": ws_b, "b_rows": b_rows, "staff": staff}


@pytest.fixture
def recording_sessions(settings):
    from tests.mobs import fakes

    settings.LASHOPS_MOB_MEMBER_SESSIONS = "tests.mobs.fakes:RecordingMemberSessions"
    fakes.reset()
    yield fakes
    fakes.reset()


@pytest.fixture
def member(client, world):
    client.force_login(world["staff"])
    return client


def _url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _snapshot(b_rows: dict) -> dict:
    return {
        model: sorted(map(repr, model._default_manager.filter(pk__in=pks).values()))
        for model, pks in b_rows.items()
        if pks
    }


def test_the_world_has_rows_of_b_in_every_registered_model(world):
    global_models = {"core.workerheartbeat", "sessions_app.modelprice", "auth.group"}
    missing = [
        m._meta.label_lower
        for m, pks in world["b_rows"].items()
        if not pks and m._meta.label_lower not in global_models
    ]
    assert missing == [], f"give these models rows in _world() so the walk covers them: {missing}"


def test_changelists_show_none_of_the_other_workspaces_rows(member, world):
    leaks = []
    for model in admin.site._registry:
        for query in ("", "?q=zz9b", "?q=aa1a"):
            response = member.get(_url(model, "changelist") + query)
            assert response.status_code in (200, 403), (model, response.status_code)
            if response.status_code == 403:
                continue
            shown = {obj.pk for obj in response.context["cl"].result_list}
            # (a search for zz9b shows the term itself in the search box)
            if shown & world["b_rows"][model] or (B in response.content.decode() and B not in query):
                leaks.append(f"{model._meta.label}{query}")
    assert leaks == []


def test_members_still_see_their_own_workspace_rows(member, world):
    from lashops.core.models import Event
    from mobs_app.models import Mob
    from processes_app.models import Process
    from sessions_app.models import Session

    for model in (Session, Process, Mob, Event):
        response = member.get(_url(model, "changelist"))
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) > 0, model


def test_change_delete_and_history_pages_of_the_other_workspace_do_not_open(member, world):
    opened = []
    for model, pks in world["b_rows"].items():
        for pk in pks:
            for view in ("change", "delete", "history"):
                response = member.get(_url(model, view, quote(pk)))
                if response.status_code == 200:
                    opened.append(f"{model._meta.label} {pk} {view}")
    assert opened == []


def test_autocomplete_and_search_return_none_of_the_other_workspaces_rows(member, world, rf):
    from django.apps import apps

    leaks = []
    for model, model_admin in admin.site._registry.items():
        sources = [
            (m, f)
            for m in apps.get_models()
            for f in m._meta.get_fields()
            if f.is_relation and f.many_to_one and f.concrete and f.remote_field.model is model
        ]
        for source, field in sources:
            response = member.get(
                "/admin/autocomplete/",
                {"app_label": source._meta.app_label, "model_name": source._meta.model_name, "field_name": field.name},
            )
            if response.status_code != 200:
                continue  # no search fields (404) or no view permission (403): nothing offered
            body = response.json()
            ids = {str(item["id"]) for item in body["results"]}
            if ids & {str(pk) for pk in world["b_rows"][model]} or B in json.dumps(body):
                leaks.append(f"autocomplete {model._meta.label} via {source._meta.label}.{field.name}")
        request = rf.get("/admin/")
        request.user = world["staff"]
        if model_admin.get_search_fields(request):
            found, _ = model_admin.get_search_results(request, model_admin.get_queryset(request), B)
            if set(found.values_list("pk", flat=True)):
                leaks.append(f"search {model._meta.label}")
    assert leaks == []


def test_form_choices_offer_none_of_the_other_workspace(member, world):
    from django import forms

    leaks = []
    for model in world["b_rows"]:
        urls = [_url(model, "add")] + [_url(model, "change", quote(pk)) for pk in _own_rows(model, world)[:1]]
        for url in urls:
            response = member.get(url)
            if response.status_code != 200 or "adminform" not in (response.context or {}):
                continue
            forms_on_page = [response.context["adminform"].form] + [
                f for formset in response.context["inline_admin_formsets"] for f in formset.formset.forms
            ]
            for form in forms_on_page:
                for name, field in form.fields.items():
                    if name == form._meta.model._meta.pk.name:
                        continue  # an inline row's own hidden id: resolved within its parent's rows only
                    if isinstance(field, forms.ModelChoiceField):
                        offered = set(field.queryset.values_list("pk", flat=True))
                        target = field.queryset.model
                        if offered & (world["b_rows"].get(target) or _b_of(target, world)):
                            leaks.append(f"{url} {name}")
            if B in response.content.decode():
                leaks.append(f"{url} renders zz9b")
    assert leaks == []


def _own_rows(model: type[Model], world: dict) -> list:
    b = world["b_rows"][model]
    return [pk for pk in _pks(model) if pk not in b]


def _b_of(model: type[Model], world: dict) -> set:
    from lashops.core.models import Workspace

    return {world["b"].pk} if model is Workspace else set()


def test_a_form_refuses_the_other_workspace_and_its_objects(member, world):
    from lashops.core.models import ApiKey
    from mobs_app.models import Contact, Edge, Mob
    from processes_app.models import TriggerEvent

    b_mob = Mob.objects.get(workspace=world["b"])
    b_event = TriggerEvent.objects.get(workspace=world["b"])
    posts = [
        ("/admin/core/apikey/add/", {"workspace": world["b"].pk, "name": "sneaky"}),
        ("/admin/mobs_app/contact/add/", {"workspace": world["b"].pk, "mob_ref": "sneaky", "transport": "inproc://x"}),
        ("/admin/mobs_app/edge/add/", {"mob": b_mob.pk, "a": f"{B}-alice", "b": f"{B}-lead"}),
        ("/admin/mobs_app/mobdefinition/add/", {"workspace": world["b"].pk, "source": MOB_TOML}),
        (
            "/admin/processes_app/triggersubscription/add/",
            {"workspace": world["a"].pk, "event": b_event.pk, "definition_name": "x", "disposition": "rerunnable"},
        ),
    ]
    before = (ApiKey.objects.count(), Contact.objects.count(), Edge.objects.count(), Mob.objects.count())
    for url, data in posts:
        response = member.post(url, data)
        assert response.status_code == 200, url  # the form again, with an error
        assert response.context["adminform"].form.errors, url
    assert (ApiKey.objects.count(), Contact.objects.count(), Edge.objects.count(), Mob.objects.count()) == before


def test_actions_posted_with_the_other_workspaces_ids_change_nothing(member, world):
    before = _snapshot(world["b_rows"])
    for model, model_admin in admin.site._registry.items():
        pks = world["b_rows"][model]
        if not pks:
            continue
        request = member.get(_url(model, "changelist")).wsgi_request
        for name in model_admin.get_actions(request):
            member.post(
                _url(model, "changelist"),
                {"action": name, "_selected_action": [str(pk) for pk in pks], "post": "yes", "apply": "1"},
            )
    assert _snapshot(world["b_rows"]) == before


def test_every_registered_admin_is_scoped_and_declares_its_safety():
    from lashops.core.admin_tools import unscoped_admins

    assert unscoped_admins(admin.site) == []


def test_an_unscoped_admin_is_reported_by_the_system_check():
    from lashops.core.admin_tools import unscoped_admins
    from sessions_app.models import Session

    site = admin.AdminSite(name="probe")
    site.register(Session, admin.ModelAdmin)
    assert unscoped_admins(site) == ["sessions_app.Session (ModelAdmin): not a WorkspaceScopedAdmin"]


def test_a_list_filter_that_reads_another_tables_values_is_reported():
    from lashops.core.admin_tools import WorkspaceScopedAdmin, unscoped_admins
    from processes_app.models import TriggerSubscription

    class Probe(WorkspaceScopedAdmin):
        workspace_path = "workspace"
        read_only = True
        deletion = "never"
        list_filter = ("event__name", "event")

    site = admin.AdminSite(name="probe-filters")
    site.register(TriggerSubscription, Probe)
    assert unscoped_admins(site) == [
        "processes_app.TriggerSubscription (Probe): list filter 'event__name' reads another table's values unscoped"
    ]
