"""Faults injected into real processes: a slow, flaky link between the replicas and Redis.

Each fault test first shows the unsafe variant failing the same assertion.
"""

from __future__ import annotations

import time

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


def until_ready(cluster, limit_s=20.0):
    """Until every replica's /readyz answers 200 again (bounded)."""
    deadline = time.monotonic() + limit_s
    while not all(replica.ready() for replica in cluster.replicas):
        assert time.monotonic() < deadline, "replicas did not recover"
        time.sleep(0.05)


def crash_redis_mid_run(strategy, durable):
    """Orders, then Redis is killed (SIGKILL) and restarted on the same port and files, then
    more orders. Returns (statuses while down, ids answered 201, what GET /orders says)."""
    with RedisServer(durable=durable) as server:
        env = {"REDIS_TIMEOUT_MS": "300"}
        with LocalCluster(replicas=3, redis_url=server.url, env=env) as cluster:
            sku = f"restart-{strategy}"
            run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT",
                      body={"quantity": 1000})
            path = f"/orders?strategy={strategy}"
            before = run_burst(cluster.urls, 20, path, body={"sku": sku})
            server.crash()
            down = run_burst(cluster.urls, 12, path, body={"sku": sku})
            server.start()
            until_ready(cluster)
            after = run_burst(cluster.urls, 20, path, body={"sku": sku})
            created = [a.body["order_id"] for a in before + after if a.status == 201]
            found = {order_id: run_burst(cluster.urls[:1], 1, f"/orders/{order_id}",
                                         method="GET")[0].status for order_id in created}
            with redis.Redis.from_url(server.url, decode_responses=True) as client:
                books = Books(client, sku)
            return down, after, found, books


def assert_nothing_acknowledged_was_lost(found, books):
    lost = [order_id for order_id, status in found.items() if status != 200]
    assert not lost, f"{len(lost)} orders answered 201 are gone after the restart"
    assert books.sold == len(found)
    books.assert_never_oversold()


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_redis_restart_loses_no_acknowledged_order(strategy):
    down, after, found, books = crash_redis_mid_run(strategy, durable=True)
    assert {a.status for a in down} == {503}
    assert all(a.headers.get("Retry-After") for a in down)
    assert {a.status for a in after} == {201}  # recovered by itself, scripts reloaded
    assert len(found) == 40
    assert_nothing_acknowledged_was_lost(found, books)


def test_without_an_fsynced_append_only_file_the_restart_loses_orders():
    _, _, found, books = crash_redis_mid_run("lua", durable=False)
    with pytest.raises(AssertionError, match="are gone"):
        assert_nothing_acknowledged_was_lost(found, books)
