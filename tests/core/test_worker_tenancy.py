"""Workers are shared by every workspace; their work is not. One worker runs work of two
workspaces: each workspace's ``worker.stale``, ``GET /api/workers`` and fleet page list only that
workspace's work in flight and leases, while the staff views of every workspace list all of it."""

from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lashops.core import heartbeat, tenancy
from lashops.core.models import Event, Lease, WorkerHeartbeat
from lashops.core.selectors import worker_report
from lashops.core.services import api_key_create, workers_sweep
from mobs_app.models import Identity, Mob
from processes_app.models import Process
from sessions_app.models import Session, Turn


@dataclass
class Work:
    """One workspace's subjects, with the ids a worker lists for them."""

    session: str
    turn: str
    process: str
    identity_pk: int
    identity_lease: str

    @property
    def ids(self) -> set[str]:
        return {self.session, self.turn, self.process, str(self.identity_pk), self.identity_lease}


def _work_of(workspace, tag: str) -> Work:
    session = Session.objects.create(id=f"s-{tag}", workspace=workspace, model={"provider": "scripted"})
    turn = Turn.objects.create(id=f"t-{tag}", session=session, index=1, input_text="hi")
    process = Process.objects.create(
        id=f"p-{tag}",
        workspace=workspace,
        disposition="rerunnable",
        registration_hash="x",
        runnable_since=timezone.now(),
    )
    mob = Mob.objects.create(workspace=workspace, mob_id="team")  # same TOML id in both workspaces
    identity = Identity.objects.create(mob=mob, key="lead", profile="lead")
    return Work(session.pk, turn.pk, process.pk, identity.pk, identity.lease_key)


@pytest.fixture
def two_tenants(db, settings, workspace, other_workspace):
    """A worker running, for each workspace, a turn, a process and an identity warm-up, holding
    their session, process and identity leases; plus a sweep that belongs to no workspace."""
    settings.LASHOPS_WORKER_HEARTBEAT = True
    settings.LASHOPS_WORKER_STALE_SECONDS = 30
    a, b = _work_of(workspace, "a"), _work_of(other_workspace, "b")
    beater = heartbeat.Beater(worker_id="w1", kind="celery", queues=["lashops"])
    expires = timezone.now() + timedelta(seconds=60)
    with ExitStack() as stack:
        for work in (a, b):
            stack.enter_context(heartbeat.track("lashops.sessions.turn_drive", turn_id=work.turn))
            stack.enter_context(heartbeat.track("lashops.processes.drive", process_id=work.process))
            stack.enter_context(heartbeat.track("lashops.mobs.identity_warm", identity_pk=work.identity_pk))
            for scope, key in (("session", work.session), ("process", work.process), ("identity", work.identity_lease)):
                Lease.objects.create(scope=scope, key=key, holder=f"{beater.host}:{beater.pid}:n1", token=1, expires_at=expires)  # fmt: skip
        stack.enter_context(heartbeat.track("lashops.core.workers_sweep"))
        beater.beat()
    return a, b


def _ids(report_or_data: dict) -> set[str]:
    items = {str(v) for item in report_or_data["in_flight"] for k, v in item.items() if k not in ("task", "since")}
    return items | {r["key"] for r in report_or_data["at_risk"]}


def _age() -> None:
    WorkerHeartbeat.objects.update(last_beat_at=timezone.now() - timedelta(seconds=31))


def test_worker_stale_in_each_workspace_lists_only_that_workspaces_work_and_leases(
    two_tenants, workspace, other_workspace
):
    a, b = two_tenants
    _age()
    assert workers_sweep() == ["w1"]
    [stale_a] = Event.objects.filter(workspace=workspace, type="worker.stale")
    [stale_b] = Event.objects.filter(workspace=other_workspace, type="worker.stale")
    for event, mine in ((stale_a, a), (stale_b, b)):
        assert event.data["worker_id"] == "w1" and event.data["health"] == "stale"
        assert event.data["in_flight_count"] == 3 and len(event.data["at_risk"]) == 3
        assert _ids(event.data) == mine.ids  # the sweep (no workspace) and the other tenant's ids: absent
    assert {r["scope"] for r in stale_a.data["at_risk"]} == {"session", "process", "identity"}


def test_workers_api_shows_only_the_callers_work_in_flight_and_leases(client, two_tenants, workspace):
    a, _ = two_tenants
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key_create(workspace=workspace, name='t').plaintext}"
    [worker] = client.get("/api/workers").json()
    assert (worker["worker_id"], worker["health"]) == ("w1", "healthy")  # the worker row itself is shared
    assert worker["in_flight_count"] == 3 and worker["leases_held"] == 3
    assert _ids(worker) == {a.turn, a.process, str(a.identity_pk)}
    _age()
    [worker] = client.get("/api/workers").json()
    assert worker["health"] == "stale" and _ids(worker) == a.ids


def test_the_fleet_page_shows_the_chosen_workspaces_work_only(client, django_user_model, two_tenants):
    _, b = two_tenants
    _age()
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-123456"))
    body = client.get("/ops/fleet.json?workspace=globex").json()
    [worker] = body["workers"]
    assert _ids(worker) == b.ids and body["counts"]["leases_held"] == 3


def test_staff_views_of_every_workspace_still_show_everything(client, django_user_model, two_tenants):
    a, b = two_tenants
    _age()
    [worker] = worker_report(workspace=None)
    assert worker["in_flight_count"] == 7 and worker["leases_held"] == 6
    assert _ids(worker) == a.ids | b.ids
    client.force_login(django_user_model.objects.create_superuser("root", password="pw-123456"))
    row = WorkerHeartbeat.objects.get()
    page = client.get(f"/admin/core/workerheartbeat/{row.pk}/change/").content.decode()
    assert all(f"{value}" in page for value in (a.turn, b.turn, a.process, b.process))


def test_mapping_work_to_workspaces_costs_one_query_per_kind(two_tenants):
    items = WorkerHeartbeat.objects.get().in_flight * 20  # 140 items of three kinds (and one of none)
    with CaptureQueriesContext(connection) as queries:
        owners = tenancy.work_workspaces(items)
    assert len(queries) == 3 and owners.count(None) == 20
    leases = list(Lease.objects.values("scope", "key")) * 20
    with CaptureQueriesContext(connection) as queries:
        assert None not in tenancy.lease_workspaces(leases)
    assert len(queries) == 3


def test_a_tasks_pk_ids_are_listed_with_its_work(db):
    ids = heartbeat.work_ids({"identity_pk": 7, "frame_pk": 3, "turn_id": "t", "text": "secret", "flag": True})
    assert ids == {"identity_pk": 7, "frame_pk": 3, "turn_id": "t"}
