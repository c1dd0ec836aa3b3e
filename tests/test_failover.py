"""A Redis fail-over under load: acknowledged orders survive it only with REDIS_WAIT_REPLICAS.

A master, its replica and 3 Sentinels (harness/sentinel.py); the service's domain follows the
Sentinels. Orders flow, the replication link stalls, the master is killed, the Sentinels
promote the replica, orders flow again. Every order a customer was told was created must be on
the new master. The control, WAIT off, loses some: the same assertion fails.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from harness.books import Books
from harness.sentinel import SentinelRedis
from service.config import Settings
from service.model import OrderRequest, OutcomeUnknown
from service.orders import OrderService
from service.redis_client import REDIS_ERRORS, connect

pytestmark = pytest.mark.slow

SKU = "failover"
STOCK = 1_000_000


def shop(service: OrderService, stop: threading.Event, told: list[str],
         unknown: list[str]) -> None:
    """One customer after another, each retrying its order under its own key until it gets an
    answer that settles it (created, or refused for good)."""
    while not stop.is_set():
        request = OrderRequest(SKU, 1, "lua", "test", idempotency_key=uuid.uuid4().hex)
        for _ in range(200):
            try:
                outcome = service.place_order(request)
            except OutcomeUnknown as exc:
                unknown.append(exc.order_id)
            except REDIS_ERRORS:
                pass
            else:
                if outcome.created:
                    told.append(outcome.order_id)
                break
            if stop.is_set():
                break
            time.sleep(0.02)


def fail_over_under_load(wait_replicas: int) -> tuple[set[str], Books, list[str]]:
    with SentinelRedis() as redis_set:
        settings = Settings.from_env(redis_set.service_env(), redis_wait_replicas=wait_replicas,
                                     redis_wait_timeout_ms=200, redis_timeout_ms=500,
                                     replica_id="test")
        service = OrderService(settings, connect(settings))
        service.set_stock(SKU, STOCK)
        stop, told, unknown = threading.Event(), [], []
        customers = [threading.Thread(target=shop, args=(service, stop, told, unknown))
                     for _ in range(4)]
        for customer in customers:
            customer.start()
        try:
            time.sleep(1.0)
            redis_set.link.stall()  # the replica hears nothing more from its master
            time.sleep(0.5)
            redis_set.crash_master()
            promoted = redis_set.wait_for_failover()
            time.sleep(1.0)  # orders go on against the promoted replica
        finally:
            stop.set()
            for customer in customers:
                customer.join(30)
        with promoted.admin(decode_responses=True) as client:
            books = Books(client, SKU)
        return set(told), books, unknown


def lost(told: set[str], books: Books) -> set[str]:
    return told - {order["order_id"] for order in books.orders}


def test_without_wait_acknowledged_orders_are_lost_in_a_fail_over():
    """The control: the assertion the safe run makes fails here."""
    told, books, _ = fail_over_under_load(wait_replicas=0)
    assert told, "no order was created"
    assert lost(told, books), "a fail-over with WAIT off lost nothing: the test cannot tell"


def test_with_wait_every_acknowledged_order_survives_the_fail_over():
    told, books, unknown = fail_over_under_load(wait_replicas=1)
    assert told, "no order was created"
    assert unknown, "no answer was withheld: the stall did not bite"
    assert lost(told, books) == set()
    books.assert_never_oversold()
