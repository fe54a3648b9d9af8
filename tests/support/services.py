"""Which real services the tests may use, and what a test does when one is missing.

A test that needs a service skips with the reason when the service is unreachable, unless
``LASHOPS_REQUIRE_SERVICES=1`` (CI), where it fails instead.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

REQUIRE_SERVICES = os.environ.get("LASHOPS_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes", "on"}
TEST_REDIS_URL = os.environ.get("LASHOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TEST_BROKER_URL = os.environ.get("LASHOPS_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def service_missing(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a service the test needs is not there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)
