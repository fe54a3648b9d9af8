"""lashops.core.txn and the Django internals it reads, pinned against the installed Django.

If a test here fails after a Django upgrade, re-read what lashops/core/txn.py's docstring lists
(BaseDatabaseWrapper.on_commit, savepoint_rollback, run_and_clear_commit_hooks, rollback;
Atomic.__exit__), adapt txn.py, and only then move the pinned version."""

import threading

import django
import pytest
from django.db import transaction

from lashops.core import txn


def _noop() -> None:
    pass


def test_the_django_version_txn_was_checked_against():
    assert django.VERSION[:2] == (5, 2), (
        "lashops/core/txn.py reads Django internals (connection.run_on_commit, needs_rollback, "
        "in_atomic_block) checked against Django 5.2: re-check django/db/backends/base/base.py "
        "(on_commit, savepoint_rollback, run_and_clear_commit_hooks, rollback) and "
        "django/db/transaction.py (Atomic.__exit__), then update this pin"
    )


@pytest.mark.django_db
def test_run_on_commit_holds_savepoint_ids_callable_and_robust_flag():
    conn = txn.connection_for()
    with transaction.atomic():
        transaction.on_commit(_noop)
        entry = conn.run_on_commit[-1]
    assert isinstance(entry, tuple) and len(entry) == 3
    sids, func, robust = entry
    assert isinstance(sids, set) and func is _noop and robust is False


@pytest.mark.django_db
def test_a_savepoint_rollback_drops_only_the_callbacks_registered_inside_it():
    def outer() -> None:
        pass

    def inner() -> None:
        pass

    with transaction.atomic():
        transaction.on_commit(outer)
        try:
            with transaction.atomic():
                transaction.on_commit(inner)
                assert txn.on_commit_queued(inner)
                raise RuntimeError("roll the savepoint back")
        except RuntimeError:
            pass
        assert txn.on_commit_queued(outer)
        assert not txn.on_commit_queued(inner)
        assert txn.still_queued([inner, outer, _noop]) == [outer]


@pytest.mark.django_db(transaction=True)
def test_a_callback_is_no_longer_queued_once_the_transaction_commits():
    ran = []

    def hook() -> None:
        ran.append(txn.on_commit_queued(hook))

    with transaction.atomic():
        transaction.on_commit(hook)
        assert txn.on_commit_queued(hook)
    assert ran == [False]  # taken off the queue before it runs
    assert not txn.on_commit_queued(hook)
    assert txn.connection_for().run_on_commit == []


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_empties_the_queue_and_clears_the_rollback_flag():
    with pytest.raises(RuntimeError), transaction.atomic():
        transaction.on_commit(_noop)
        raise RuntimeError("roll back")
    assert not txn.on_commit_queued(_noop)
    assert not txn.rollback_pending()
    assert not txn.in_transaction()


@pytest.mark.django_db
def test_an_exception_through_an_inner_block_without_savepoint_dooms_the_transaction():
    with transaction.atomic():
        assert txn.in_transaction() and not txn.rollback_pending()
        try:
            with transaction.atomic(savepoint=False):
                raise RuntimeError("no savepoint to return to")
        except RuntimeError:
            pass
        assert txn.rollback_pending()
        assert txn.rollback_pending() == transaction.get_rollback()
        transaction.set_rollback(False)  # let the test's own transaction end normally


@pytest.mark.django_db
def test_an_exception_through_a_savepoint_leaves_the_transaction_usable():
    with transaction.atomic():
        try:
            with transaction.atomic():
                raise RuntimeError("rolled back to the savepoint")
        except RuntimeError:
            pass
        assert not txn.rollback_pending()


@pytest.mark.django_db(transaction=True)
def test_in_transaction_is_true_at_any_depth_of_atomic_only():
    assert not txn.in_transaction()
    with transaction.atomic():
        with transaction.atomic():
            assert txn.in_transaction()
        assert txn.in_transaction()
    assert not txn.in_transaction()


def test_connection_state_is_per_connection_and_leaves_the_connection_object_alone():
    state: txn.ConnectionState[list[str]] = txn.ConnectionState()
    conn = txn.connection_for()
    attributes = set(vars(conn))
    state.setdefault(list).append("main")
    seen_elsewhere = []

    def other_thread() -> None:
        seen_elsewhere.append(state.get())
        state.set(["other"])
        seen_elsewhere.append(state.pop())

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen_elsewhere == [None, ["other"]]  # another thread, another connection
    assert state.get() == ["main"] and state.setdefault(list) == ["main"]
    assert set(vars(conn)) == attributes
    assert state.pop() == ["main"] and state.get() is None
    state.clear()  # clearing what is not there is fine
