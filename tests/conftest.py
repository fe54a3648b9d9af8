"""Shared fixtures, and the rules for tests that need real services.

``make test`` runs the suite twice: on SQLite (the embedded default; tests marked
``postgres`` are deselected) and on PostgreSQL (``DATABASE_URL``). A test that needs a
service skips with the reason when the service is unreachable, unless
``LASHOPS_REQUIRE_SERVICES=1`` (CI), where it fails instead.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from tests.support.services import REQUIRE_SERVICES, TEST_BROKER_URL, TEST_REDIS_URL, reachable, service_missing


def pytest_configure(config: pytest.Config) -> None:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")) and not reachable(url, 5432):
        if REQUIRE_SERVICES:
            pytest.exit(f"PostgreSQL at {urlsplit(url).hostname} is unreachable and services are required", 1)
        pytest.exit("PostgreSQL is unreachable: skipping the PostgreSQL pass", 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    for item in items:
        if item.get_closest_marker("postgres") and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL only: runs in the PostgreSQL pass (DATABASE_URL)"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Let the in-process runner finish what the test dispatched before fixtures tear down: a
    background task still writing while a transactional test truncates the tables deadlocks."""
    from lashops.core import runner

    runner.drain(timeout=30)


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not reachable(TEST_REDIS_URL, 6379):
        service_missing(f"Redis unreachable at {TEST_REDIS_URL}")
    return TEST_REDIS_URL


@pytest.fixture
def broker_url(redis_url) -> str:
    """An empty Redis database for a Celery broker (flushed before each test)."""
    import redis

    if not reachable(TEST_BROKER_URL, 6379):
        service_missing(f"Redis broker unreachable at {TEST_BROKER_URL}")
    redis.Redis.from_url(TEST_BROKER_URL).flushdb()
    return TEST_BROKER_URL


@pytest.fixture
def workspace(db):
    from lashops.core.services import workspace_create

    return workspace_create(slug="acme", name="Acme")


@pytest.fixture
def other_workspace(db):
    from lashops.core.services import workspace_create

    return workspace_create(slug="globex", name="Globex")


@pytest.fixture
def api_key(workspace):
    from lashops.core.services import api_key_create

    return api_key_create(workspace=workspace, name="tests").plaintext


@pytest.fixture
def api(client, api_key):
    """A Django test client that sends the workspace API key."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    return client


@pytest.fixture
def redis_instance(tmp_path):
    """A private redis-server on a spare port (never the shared one) that the test may stop
    (``SHUTDOWN NOSAVE``) and start again on the same port: ``tests/support/redis_instance.py``."""
    from tests.support import redis_instance as support

    if not support.available():
        service_missing("redis-server is not installed")
    instance = support.RedisInstance(log_dir=tmp_path / "redis").start()
    yield instance
    instance.kill()
