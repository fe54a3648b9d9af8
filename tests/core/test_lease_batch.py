"""lease_acquire_many: the batch form of lease_acquire used by the process runner's claims."""

from __future__ import annotations

import time

import pytest

from lashops.core.errors import LeaseLost
from lashops.core.services import lease_acquire, lease_acquire_many, lease_check, lease_release

pytestmark = pytest.mark.django_db


def test_a_batch_takes_new_free_and_expired_leases_and_skips_held_ones():
    lease_acquire(scope="process", key="held", holder="other", ttl=30)
    freed = lease_acquire(scope="process", key="freed", holder="other", ttl=30)
    lease_release(scope="process", key="freed", token=freed.token)
    expired = lease_acquire(scope="process", key="expired", holder="other", ttl=0.01)
    time.sleep(0.05)

    grants = lease_acquire_many(scope="process", keys=["new", "held", "freed", "expired"], holder="me", ttl=30)

    assert sorted(grants) == ["expired", "freed", "new"]
    assert grants["new"].token == 1
    assert grants["freed"].token == freed.token + 1 and grants["expired"].token == expired.token + 1
    with pytest.raises(LeaseLost):  # the previous holder of the expired lease is fenced out
        lease_check(scope="process", key="expired", token=expired.token)
    lease_check(scope="process", key="expired", token=grants["expired"].token)
