"""Fixtures for the framework-free engine tests."""

from __future__ import annotations

import pytest

from .helpers import Harness


@pytest.fixture
def harness() -> Harness:
    return Harness()
