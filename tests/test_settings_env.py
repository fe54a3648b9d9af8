import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from lashops.env import database_from_url, env_bool, env_int

ROOT = Path(__file__).resolve().parent.parent


def test_sqlite_url_gets_wal_immediate_transactions_and_busy_timeout(tmp_path):
    db = database_from_url(f"sqlite:///{tmp_path}/x.sqlite3", base_dir=tmp_path)
    assert db["NAME"] == f"{tmp_path}/x.sqlite3"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["OPTIONS"]["timeout"] >= 5
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_postgres_url_is_split_into_django_fields(tmp_path):
    db = database_from_url("postgres://u:p%40ss@db.example:6543/lash?sslmode=require", base_dir=tmp_path)
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "u",
        "p@ss",
        "db.example",
        "6543",
        "lash",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_unknown_database_scheme_is_refused(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_from_url("mysql://x/y", base_dir=tmp_path)


def test_malformed_knobs_name_the_variable(monkeypatch):
    monkeypatch.setenv("LASHOPS_X", "lots")
    with pytest.raises(ImproperlyConfigured, match="LASHOPS_X"):
        env_int("LASHOPS_X", 1)
    monkeypatch.setenv("LASHOPS_Y", "maybe")
    with pytest.raises(ImproperlyConfigured, match="LASHOPS_Y"):
        env_bool("LASHOPS_Y")


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "LASHOPS_TESTING"}}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import lashops.settings as s; print(s.SECRET_KEY[:8])"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
    )


def test_missing_secret_key_outside_debug_is_improperly_configured():
    result = _import_settings({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_debug_gets_a_development_secret_key():
    result = _import_settings({"DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lashops-"
