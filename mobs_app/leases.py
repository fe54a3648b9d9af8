"""Identity leases: who may act on an identity now. A thin interface over the platform's
``lashops.core`` lease services (scope ``identity``), so a host can plug its own provider."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from lashops.core import services as core
from lashops.core.errors import LeaseHeld, LeaseLost
from mobs_app.errors import IdentityBusy

SCOPE = "identity"


def runtime_instance_id() -> str:
    """This runtime instance (``LASHOPS_MOB_RUNTIME_ID`` or host:pid): where a lease holder runs.
    Not a holder id by itself: the request threads of one process are separate contenders."""
    return settings.LASHOPS_MOB_RUNTIME_ID or f"{socket.gethostname()}:{os.getpid()}"


def lease_holder_id() -> str:
    """A holder id of its own for one caller (one operation): ``<runtime instance>:<nonce>``.
    The lease service lets a holder take its own lease again, so a shared id would let two
    threads of one process both "hold" an identity. With host:pid first, a worker's lease
    holder prefix (``host:pid:``) still names the process that holds it."""
    return f"{runtime_instance_id()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Acquired:
    key: str
    holder: str
    token: int


@dataclass(frozen=True)
class AlreadyHeld:
    key: str
    holder: str


class IdentityLeaseProvider(Protocol):
    def acquire(self, keys: list[str], *, holder: str, ttl: float) -> list[Acquired | AlreadyHeld]: ...
    def renew(self, key: str, *, token: int, ttl: float) -> bool: ...
    def release(self, key: str, *, token: int) -> bool: ...
    def check(self, key: str, *, token: int, lock: bool = False) -> None: ...


class DatabaseIdentityLeases:
    """Leases in the platform ``Lease`` table: conditional UPDATE, monotonic fencing token,
    enforced TTL. Safe across OS processes."""

    def acquire(self, keys: list[str], *, holder: str, ttl: float) -> list[Acquired | AlreadyHeld]:
        results: list[Acquired | AlreadyHeld] = []
        for key in keys:
            try:
                grant = core.lease_acquire(scope=SCOPE, key=key, holder=holder, ttl=ttl)
                results.append(Acquired(key=key, holder=holder, token=grant.token))
            except LeaseHeld as held:
                results.append(AlreadyHeld(key=key, holder=held.holder))
        return results

    def renew(self, key: str, *, token: int, ttl: float) -> bool:
        """True when renewed; False when the lease was lost (``Lost``)."""
        try:
            core.lease_renew(scope=SCOPE, key=key, token=token, ttl=ttl)
            return True
        except LeaseLost:
            return False

    def release(self, key: str, *, token: int) -> bool:
        return core.lease_release(scope=SCOPE, key=key, token=token)

    def check(self, key: str, *, token: int, lock: bool = False) -> None:
        core.lease_check(scope=SCOPE, key=key, token=token, lock=lock)


def lease_provider() -> IdentityLeaseProvider:
    from lashops.runtime.tools import resolve_dotted_path

    path = settings.LASHOPS_MOB_LEASE_PROVIDER
    return resolve_dotted_path(path)() if path else DatabaseIdentityLeases()


def identity_lease_acquire(*, key: str, holder: str | None = None, ttl: float | None = None) -> Acquired:
    """Acquire one identity lease for one caller (a fresh ``lease_holder_id`` unless ``holder`` is
    given) or raise ``IdentityBusy`` (409 ``identity_busy``, a ``LeaseHeld``) naming the holder."""
    holder = holder or lease_holder_id()
    for _ in range(2):
        result = lease_provider().acquire([key], holder=holder, ttl=ttl or settings.LASHOPS_MOB_LEASE_TTL)[0]
        if not (isinstance(result, AlreadyHeld) and not result.holder):
            break  # else it was released between the claim and the read of its holder: claim again
    if isinstance(result, AlreadyHeld):
        raise IdentityBusy(
            f"identity {key.partition(':')[2] or key!r} is busy: another operation holds its lease "
            f"({result.holder!r}); try again when it has finished",
            holder=result.holder,
            token=0,
        )
    return result
