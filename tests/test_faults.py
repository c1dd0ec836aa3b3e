"""Faults injected into real processes: a slow, flaky link between the replicas and Redis.

Each fault test first shows the unsafe variant failing the same assertion.
"""

from __future__ import annotations

import pytest
import redis

from benchmarks.cluster import LocalCluster
from benchmarks.load import run_burst
from benchmarks.proxy import FlakyProxy
from benchmarks.redis_server import RedisServer
from tests.books import Books

pytestmark = pytest.mark.slow

ORDERS = 20
ROUNDS = 60


@pytest.fixture(scope="module")
def flaky_link():
    """3 replicas whose Redis sits behind FlakyProxy; drops are switched on by each test."""
    with RedisServer() as server, FlakyProxy(server.port, latency_s=0.001) as proxy:
        env = {"REDIS_TIMEOUT_MS": "300", "LOCK_TTL_MS": "500", "LOCK_WAIT_MS": "1000"}
        with LocalCluster(replicas=3, redis_url=proxy.url, env=env) as cluster:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            yield cluster, proxy, client
            client.close()


def order_until_answered(cluster, strategy, sku, with_key):
    """ORDERS logical orders, each sent again (same key, or none) until it gets a 201 or 409.

    Returns the final status of each logical order.
    """
    final: dict[int, int] = {}
    pending = list(range(ORDERS))
    for _ in range(ROUNDS):
        if not pending:
            break
        answers = run_burst(
            cluster.urls, len(pending), f"/orders?strategy={strategy}", body={"sku": sku},
            headers=lambda j, batch=tuple(pending): (
                {"Idempotency-Key": f"{sku}-{batch[j]}"} if with_key else {}),
            timeout_s=10)
        for logical, answer in zip(pending, answers, strict=True):
            if answer.status in (201, 409):
                final[logical] = answer.status
        pending = [logical for logical in pending if logical not in final]
    assert not pending, f"{len(pending)} orders never got an answer in {ROUNDS} rounds"
    return final


def assert_each_order_recorded_once(books, final):
    books.assert_never_oversold()
    acknowledged = sum(status == 201 for status in final.values())
    assert books.sold == acknowledged, (
        f"{books.sold} recorded for {acknowledged} orders the clients saw created")


def run_through_flaky_link(flaky_link, strategy, with_key):
    cluster, proxy, client = flaky_link
    sku = f"flaky-{strategy}-{'key' if with_key else 'nokey'}"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 1000})
    dropped_before = proxy.dropped
    proxy.drop_probability = 0.2  # a fifth of Redis's answers never arrive
    try:
        final = order_until_answered(cluster, strategy, sku, with_key)
    finally:
        proxy.drop_probability = 0.0
    assert proxy.dropped > dropped_before  # the fault did happen
    return Books(client, sku), final


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_retries_with_a_key_never_decrement_twice(flaky_link, strategy):
    books, final = run_through_flaky_link(flaky_link, strategy, with_key=True)
    assert set(final.values()) == {201}
    assert_each_order_recorded_once(books, final)


def test_retries_without_a_key_decrement_twice(flaky_link):
    books, final = run_through_flaky_link(flaky_link, "lua", with_key=False)
    with pytest.raises(AssertionError, match="recorded for"):
        assert_each_order_recorded_once(books, final)
