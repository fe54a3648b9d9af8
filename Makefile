# LashOps: `make demo` runs the platform on its embedded defaults; `make test` runs lint and tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The PostgreSQL pass of `make test` (skipped with a message when unreachable, unless
# LASHOPS_REQUIRE_SERVICES=1).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
LASHOPS_TEST_DATABASE_NAME ?= test_lashops
export LASHOPS_TEST_DATABASE_NAME

.PHONY: demo test lint format migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py lashops_demo
	DEBUG=1 $(BIN)/python manage.py runserver 127.0.0.1:8000

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# mypy imports the settings (django-stubs' plugin): DEBUG=1 spares it a SECRET_KEY.
	DEBUG=1 $(BIN)/mypy

test: lint
	@echo "== SQLite pass (embedded default) =="
	env -u DATABASE_URL -u REDIS_URL -u CELERY_BROKER_URL $(BIN)/pytest -m "not postgres"
	@echo "== PostgreSQL pass ($(TEST_DATABASE_URL)) =="
	env -u REDIS_URL -u CELERY_BROKER_URL DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
