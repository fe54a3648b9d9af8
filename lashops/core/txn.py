"""Transaction-time machinery: the one module that reads Django's connection internals.

What the rest of LashOps needs from a database transaction beyond ``transaction.atomic`` and
``transaction.on_commit``, and the private Django state behind it:

* ``in_transaction()``: ``connection.in_atomic_block`` (set by ``atomic``);
* ``rollback_pending()``: ``connection.needs_rollback`` (the flag ``atomic`` sets when an
  exception crossed an inner block; ``transaction.get_rollback`` reads it but raises outside
  ``atomic``);
* ``on_commit_queued()``: whether a callable registered with ``transaction.on_commit`` is still
  queued, read from ``connection.run_on_commit``, a private list of ``(savepoint_ids, func,
  robust)`` tuples from which a savepoint rollback drops the callbacks registered inside it;
* ``ConnectionState``: state kept per database connection (a ``WeakKeyDictionary`` keyed by the
  connection object, not attributes set on it).

``tests/core/test_txn.py`` pins these against the installed Django version: on a Django upgrade,
re-check ``BaseDatabaseWrapper.on_commit``, ``savepoint_rollback``, ``run_and_clear_commit_hooks``
and ``rollback`` (django/db/backends/base/base.py) and ``Atomic.__exit__``
(django/db/transaction.py), then update the version the test expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")
C = TypeVar("C", bound=Callable[..., Any])


def connection_for(using: str | None = None) -> BaseDatabaseWrapper:
    """The current thread's connection object for ``using`` (the real wrapper, not the
    ``django.db.connection`` proxy, so it can key a ``ConnectionState``)."""
    return transaction.get_connection(using or DEFAULT_DB_ALIAS)


def in_transaction(using: str | None = None) -> bool:
    """True inside ``transaction.atomic()`` (at any depth) on this connection."""
    return bool(connection_for(using).in_atomic_block)


def rollback_pending(using: str | None = None) -> bool:
    """True when the current transaction is already doomed: an exception crossed an inner
    ``atomic`` block without a savepoint, so the outermost one will roll back. False outside a
    transaction (unlike ``transaction.get_rollback``, which raises there)."""
    return bool(connection_for(using).needs_rollback)


def _queued_ids(conn: BaseDatabaseWrapper) -> set[int]:
    # Django 5.2: run_on_commit is a list of (savepoint ids, func, robust); see the module docstring.
    # django-stubs 5.2.9 declares 2-tuples; Django 5.2 stores 3 (pinned in tests/core/test_txn.py).
    return {id(func) for _sids, func, _robust in conn.run_on_commit}  # type: ignore[misc]


def on_commit_queued(func: Callable[..., Any], using: str | None = None) -> bool:
    """True while ``func`` (the very object passed to ``transaction.on_commit``) is queued to run
    when this connection's transaction commits: False once it ran, or if the savepoint it was
    registered in rolled back, or the transaction did."""
    return id(func) in _queued_ids(connection_for(using))


def still_queued(funcs: Iterable[C], using: str | None = None) -> list[C]:
    """Those of ``funcs`` that are still queued (see ``on_commit_queued``), in their order; one
    pass over the queue however many are asked about."""
    queued = _queued_ids(connection_for(using))
    return [func for func in funcs if id(func) in queued]


class ConnectionState(Generic[T]):
    """One value per database connection, for state that lives as long as something on that
    connection does (a block, an outermost transaction, until a commit hook consumes it).

    The holder decides the lifetime: it ``set``s the value when its scope opens and ``clear``s
    it when the scope ends (a ``finally``, or the commit hook that consumes the value). Nothing
    is cleared on rollback: a holder whose state must not outlive a rolled-back transaction
    clears it itself, or checks ``on_commit_queued`` on a callback it registered with it.

    Connections are per thread (and per async context), so each sees its own value; a
    connection that is garbage collected takes its value with it.

    Declare one at module level::

        _pending: txn.ConnectionState[list[str]] = txn.ConnectionState()

        ids = _pending.setdefault(list)   # this connection's list, created on first use
        ...
        ids = _pending.pop() or []        # take it and start afresh
    """

    def __init__(self) -> None:
        self._values: WeakKeyDictionary[BaseDatabaseWrapper, T] = WeakKeyDictionary()

    def get(self, using: str | None = None) -> T | None:
        return self._values.get(connection_for(using))

    def set(self, value: T, using: str | None = None) -> None:
        self._values[connection_for(using)] = value

    def setdefault(self, factory: Callable[[], T], using: str | None = None) -> T:
        """This connection's value, set from ``factory()`` first if there is none."""
        conn = connection_for(using)
        value = self._values.get(conn)
        if value is None:
            value = self._values[conn] = factory()
        return value

    def pop(self, using: str | None = None) -> T | None:
        """Remove this connection's value and return it (None if there was none)."""
        return self._values.pop(connection_for(using), None)

    def clear(self, using: str | None = None) -> None:
        self._values.pop(connection_for(using), None)
