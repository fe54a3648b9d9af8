"""Schemathesis against the app's own OpenAPI document: every operation, positive and negative
data, every response check. It fails on any 5xx, any response that breaks its documented schema,
content type or headers, any status the document does not list, any invalid request accepted and
any valid one refused.

Runs in-process over WSGI, in the test's transaction (so nothing dispatched after commit runs and
the run is repeatable), with a fixed Hypothesis seed (``derandomize``) and a bounded number of
examples per operation and mode. ``LASHOPS_FUZZ_EXAMPLES`` raises the bound for a longer local run.
"""

from __future__ import annotations

import itertools
import os
import traceback
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.db import DatabaseError, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi import checks as openapi_checks

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("LASHOPS_FUZZ_EXAMPLES", "10"))
COVERAGE_CASES = int(os.environ.get("LASHOPS_FUZZ_COVERAGE_CASES", "60"))

CHECKS = [
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    openapi_checks.positive_data_acceptance,
    # On a 2xx, the same request again without the key and with a wrong one must be refused.
    openapi_checks.ignored_auth,
]


@dataclass
class FuzzRun:
    cases: int = 0
    operations: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)
    unsatisfiable: set[str] = field(default_factory=set)
    domain_refusals: int = 0


def _refused_by_a_stated_rule(response) -> bool:
    """Schema-valid data that the API may still refuse with 422, by rules the document states in
    words because JSON Schema cannot: a domain check (an unknown definition, a TOML or cron
    that does not parse: codes other than ``validation_error``; a rule across fields), or the
    text rule (no NUL or lone surrogate) inside free-form JSON values and object keys."""
    if response is None or response.status_code != 422:
        return False
    error = response.json()["error"]
    if error["code"] != "validation_error":
        return True
    details = error["details"] or []
    if not isinstance(details, list) or not details:
        return False
    # The schema layer types each detail; a service's cross-field rule (a timeout only for an
    # externally owned process) reports the field without one.
    return all(d.get("type") in (None, "string_unstorable") for d in details)


def _failure_key(label: str, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{label}: {type(exc).__name__}: {first[:200]}"


@pytest.fixture
def connection_kept_across_requests():
    """Django closes the connection when a request finishes; the test client unhooks that, and a
    WSGI caller in the test's transaction must do the same."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_every_operation_survives_generated_input(api_key, workspace, connection_kept_across_requests):
    from lashops.core.models import ApiKey

    load_all_checks()
    from schemathesis.checks import not_a_server_error

    checks = [not_a_server_error, *CHECKS]
    our_key = ApiKey.objects.filter(workspace=workspace).latest("pk")
    auth = {"Authorization": f"Bearer {api_key}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGIHandler())
    run = FuzzRun()

    def exercise(label: str, case) -> None:
        run.cases += 1
        savepoint = transaction.savepoint()
        response = None
        try:
            response = case.call(headers=auth)
            run.statuses[response.status_code] += 1
            case.validate_response(response, checks=checks, headers=auth)
        except (Exception, BaseExceptionGroup) as exc:  # collected: every distinct failure is reported at once
            for failure in getattr(exc, "exceptions", [exc]):
                if isinstance(failure, RejectedPositiveData) and _refused_by_a_stated_rule(response):
                    run.domain_refusals += 1
                    continue
                key = _failure_key(label, failure)
                answer = "" if response is None else f"[{response.status_code}] {response.text[:400]}"
                run.failures.setdefault(key, f"{case.as_curl_command(headers=auth)}\n{answer}\n{failure}")
        try:
            transaction.savepoint_commit(savepoint)
        except DatabaseError:
            transaction.savepoint_rollback(savepoint)
        # A generated DELETE /api/keys/{id} may revoke the key this run authenticates with.
        ApiKey.objects.filter(pk=our_key.pk).update(revoked_at=None)

    def fuzzer(strategy, label: str):
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case) -> None:
            exercise(label, case)

        return fuzz

    for result in schema.get_all_operations():
        operation = result.ok()
        run.operations.add(operation.label)
        # Schemathesis's coverage phase: boundary values, each constraint broken in turn, NUL and
        # other awkward strings, wrong types; systematic, so the same cases every run.
        coverage = schema.iter_coverage_cases(
            operation,
            generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=schema.config.generation_for(operation=operation, phase="coverage"),
        )
        for case in itertools.islice(coverage, COVERAGE_CASES):
            exercise(f"{operation.label} [coverage]", case)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} [{mode.value}]"
            try:
                fuzzer(operation.as_strategy(generation_mode=mode), label)()
            except Unsatisfiable:
                # No invalid request can be expressed (only free-form strings): nothing to send.
                run.unsatisfiable.add(label)
            except Exception:
                run.failures.setdefault(f"{label}: generation", traceback.format_exc())

    print(
        f"\nschemathesis: {run.cases} cases, {len(run.operations)} operations, "
        f"{len(run.failures)} failures; statuses {dict(sorted(run.statuses.items()))}; "
        f"{run.domain_refusals} schema-valid requests refused by a stated rule; "
        f"{len(run.unsatisfiable)} operation modes with no invalid request to make"
    )
    report = "\n\n".join(f"{key}\n{detail}" for key, detail in sorted(run.failures.items()))
    assert not run.failures, f"{len(run.failures)} distinct failures:\n\n{report}"
