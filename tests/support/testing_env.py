"""Loaded by pytest before anything else (``-p tests.support.testing_env`` in pyproject's addopts):
pytest-django imports the settings before any conftest.py runs, so the environment the settings
read under tests is set here. ``LASHOPS_TESTING=1`` (docs/configuration.md) turns off what only
a running platform wants (the in-process scheduler, worker heartbeats) and allows the
development SECRET_KEY. Subprocesses the tests start inherit it."""

import os

os.environ.setdefault("LASHOPS_TESTING", "1")
