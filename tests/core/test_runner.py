"""The in-process runner: a task that dispatches follow-up work while the pool shuts down."""

import threading

import pytest
from celery import shared_task

from lashops.core import runner

pytestmark = pytest.mark.django_db(transaction=True)

started = threading.Event()
release = threading.Event()


@shared_task(name="tests.core.chain_once")
def chain_once(*, again: bool) -> None:
    if again:
        started.set()
        release.wait(5)
        runner.run_in_process(chain_once, again=False)  # follow-up work, as a turn commit does


def test_shutdown_does_not_deadlock_with_a_task_that_dispatches_more_work():
    runner.run_in_process(chain_once, again=True)
    assert started.wait(5)
    stopper = threading.Thread(target=runner.shutdown)
    stopper.start()
    release.set()
    stopper.join(10)
    assert not stopper.is_alive(), "runner.shutdown() deadlocked"
    runner.shutdown()


def test_drain_waits_for_work_and_the_work_it_dispatches():
    release.set()
    done = threading.Event()

    @shared_task(name="tests.core.mark_done")
    def mark_done() -> None:
        done.set()

    @shared_task(name="tests.core.hand_on")
    def hand_on() -> None:
        import time

        time.sleep(0.2)
        runner.run_in_process(mark_done)

    runner.run_in_process(hand_on)
    assert runner.drain(timeout=10)
    assert done.is_set()
