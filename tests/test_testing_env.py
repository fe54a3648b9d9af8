"""TESTING comes from the environment (LASHOPS_TESTING), set for the suite before the settings load."""

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_runs_with_lashops_testing_set_before_the_settings_loaded():
    assert os.environ["LASHOPS_TESTING"] == "1"
    assert settings.TESTING is True
    assert settings.LASHOPS_SCHEDULER is False and settings.LASHOPS_WORKER_HEARTBEAT is False


def test_importing_pytest_does_not_make_a_process_a_test_run():
    env = {k: v for k, v in os.environ.items() if k not in {"LASHOPS_TESTING", "PYTEST_VERSION"}}
    env["DEBUG"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", "import pytest, lashops.settings as s; print(s.TESTING)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
