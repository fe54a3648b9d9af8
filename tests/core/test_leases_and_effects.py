import time

import pytest

from lashops.core.errors import LeaseHeld, LeaseLost
from lashops.core.services import (
    effect_lookup,
    effect_record,
    lease_acquire,
    lease_check,
    lease_release,
    lease_renew,
    lease_revoke,
)

pytestmark = pytest.mark.django_db


def test_second_holder_gets_already_held_with_the_holder():
    lease_acquire(scope="session", key="s1", holder="worker-a", ttl=30)
    with pytest.raises(LeaseHeld) as err:
        lease_acquire(scope="session", key="s1", holder="worker-b", ttl=30)
    assert err.value.holder == "worker-a"
    assert err.value.details["holder"] == "worker-a"


def test_expired_lease_is_taken_over_with_a_higher_token_and_fences_the_old_holder():
    first = lease_acquire(scope="session", key="s1", holder="worker-a", ttl=0.05)
    time.sleep(0.1)
    second = lease_acquire(scope="session", key="s1", holder="worker-b", ttl=30)
    assert second.token > first.token
    with pytest.raises(LeaseLost):
        lease_check(scope="session", key="s1", token=first.token)
    with pytest.raises(LeaseLost):
        lease_renew(scope="session", key="s1", token=first.token, ttl=30)
    lease_check(scope="session", key="s1", token=second.token)


def test_release_frees_the_lease_but_the_token_keeps_growing():
    first = lease_acquire(scope="process", key="p1", holder="a", ttl=30)
    assert lease_release(scope="process", key="p1", token=first.token)
    second = lease_acquire(scope="process", key="p1", holder="b", ttl=30)
    assert second.token == first.token + 1


def test_stale_release_does_nothing():
    first = lease_acquire(scope="process", key="p1", holder="a", ttl=30)
    lease_revoke(scope="process", key="p1")
    assert not lease_release(scope="process", key="p1", token=first.token)


def test_renew_extends_a_current_lease():
    grant = lease_acquire(scope="identity", key="m/a", holder="a", ttl=0.2)
    renewed = lease_renew(scope="identity", key="m/a", token=grant.token, ttl=30)
    assert renewed.expires_at > grant.expires_at


def test_effect_first_writer_wins_and_replay_returns_the_recorded_outcome(workspace):
    key = "turn:s1:t1/0/llm_call/attempt-1"
    assert effect_lookup(replay_key=key) is None
    assert effect_record(
        workspace=workspace, scope="turn:s1:t1", replay_key=key, kind="llm_call", outcome={"n": 1}
    ) == {"n": 1}
    again = effect_record(workspace=workspace, scope="turn:s1:t1", replay_key=key, kind="llm_call", outcome={"n": 2})
    assert again == {"n": 1}
    assert effect_lookup(replay_key=key) == {"n": 1}
