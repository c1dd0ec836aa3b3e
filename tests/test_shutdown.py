"""Graceful shutdown: SIGTERM lets in-flight orders finish, leaves no lock behind, and the
replica exits within gunicorn's graceful timeout. The control, a replica with no grace
(GUNICORN_GRACEFUL_TIMEOUT=0: its workers are killed at once), fails the same assertion.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import pytest

from harness.books import Books
from harness.load import Result, run_burst
from harness.replicas import LocalReplicas
from service.keys import SkuKeys

pytestmark = pytest.mark.slow

IN_FLIGHT = 5
HOLD_MS = 150  # each order holds the SKU's lock this long, so the orders queue behind it
LEASE_MS = 3000


@dataclass
class Drain:
    answers: list[Result]
    books: Books
    exit_code: int
    exit_s: float
    lock_left: bool
    lock_gone_after_s: float


def sigterm_mid_run(grace_s: int) -> Drain:
    env = {"ENABLE_UNSAFE_STRATEGY": "1", "CRITICAL_SECTION_DELAY_MS": str(HOLD_MS),
           "GUNICORN_GRACEFUL_TIMEOUT": str(grace_s), "LOCK_TTL_MS": str(LEASE_MS),
           "LOCK_WAIT_MS": "5000"}
    sku = f"drain-{grace_s}"
    lock_key = SkuKeys(sku).lock
    with LocalReplicas(replicas=1, workers=1, env=env) as cluster, \
            cluster.redis_client(decode_responses=True) as client:
        replica = cluster.replicas[0]
        run_burst(cluster.urls, 1, f"/stock/{sku}", method="PUT", body={"quantity": 20})
        answers: list[Result] = []
        burst = threading.Thread(target=lambda: answers.extend(run_burst(
            cluster.urls, IN_FLIGHT, "/orders?strategy=lock", body={"sku": sku})))
        burst.start()
        deadline = time.monotonic() + 10
        while not client.exists(lock_key):  # the first order holds the lock: all are in
            assert time.monotonic() < deadline, "the orders never took the lock"
            time.sleep(0.002)
        time.sleep(0.05)
        sent = time.monotonic()
        replica.signal(signal.SIGTERM)
        exit_code = replica.process.wait(timeout=60)
        exit_s = time.monotonic() - sent
        burst.join(30)
        lock_left = bool(client.exists(lock_key))
        while client.exists(lock_key) and time.monotonic() - sent < 10:
            time.sleep(0.01)
        gone_after = time.monotonic() - sent
        return Drain(answers, Books(client, sku), exit_code, exit_s, lock_left, gone_after)


def assert_drained(drain: Drain, grace_s: int) -> None:
    """Every order in flight at SIGTERM answered and recorded; no lock left; a clean exit."""
    assert sorted(a.status for a in drain.answers) == [201] * IN_FLIGHT, drain.answers
    assert drain.books.sold == IN_FLIGHT
    drain.books.assert_never_oversold()
    assert not drain.lock_left
    assert drain.exit_code == 0 and drain.exit_s < grace_s + 2


def test_sigterm_lets_in_flight_orders_finish():
    assert_drained(sigterm_mid_run(grace_s=10), grace_s=10)


def test_without_grace_in_flight_orders_are_cut():
    drain = sigterm_mid_run(grace_s=0)
    with pytest.raises(AssertionError):
        assert_drained(drain, grace_s=0)
    assert any(a.status == 0 for a in drain.answers)  # no answer at all for some
    drain.books.assert_never_oversold()  # cut, but still never oversold or half-written
    assert drain.books.sold == sum(a.status == 201 for a in drain.answers)
    # The killed holder's lock is not renewed by anyone: it ends with its lease.
    assert drain.lock_gone_after_s < LEASE_MS / 1000 + 1
