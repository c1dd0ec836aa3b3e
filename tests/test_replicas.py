"""Three real gunicorn replicas on one real Redis: the original experiment, and idempotency."""

from __future__ import annotations

import pytest
import redis

from benchmarks.cluster import LocalCluster
from benchmarks.load import run_burst
from benchmarks.seed import run_seed
from tests.books import Books

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    # The unsafe control is enabled, and a 10 ms pause between read and write (in `lock` and
    # `none`) widens the race window, so `none` oversells every time instead of by chance.
    env = {"ENABLE_UNSAFE_STRATEGY": "1", "CRITICAL_SECTION_DELAY_MS": "10"}
    with LocalCluster(replicas=3, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_redis(cluster):
    client = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    yield client
    client.close()


def assert_original_outcome(run, cluster_redis):
    assert run.failures() == []
    Books(cluster_redis, run.sku).assert_never_oversold()


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_40_orders_for_10_in_stock_over_3_replicas(cluster, cluster_redis, strategy):
    run = run_seed(cluster.urls, strategy, sku=f"seed-{strategy}")
    assert {r.replica for r in run.results} == {"replica-1", "replica-2", "replica-3"}
    assert run.statuses == {201: 10, 409: 30}
    assert_original_outcome(run, cluster_redis)


def test_without_a_lock_the_same_run_oversells(cluster, cluster_redis):
    run = run_seed(cluster.urls, "none", sku="seed-none")
    assert run.created > 10
    with pytest.raises(AssertionError):
        assert_original_outcome(run, cluster_redis)


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_idempotency_key_replays_on_every_replica(cluster, cluster_redis, strategy):
    sku = f"idem-seq-{strategy}"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 5})
    answers = [
        run_burst([url], 1, f"/orders?strategy={strategy}", body={"sku": sku},
                  headers=lambda i: {"Idempotency-Key": f"seq-{strategy}"})[0]
        for url in cluster.urls
    ]
    assert [a.status for a in answers] == [201, 201, 201]
    assert [a.replica for a in answers] == ["replica-1", "replica-2", "replica-3"]
    assert len({a.body["order_id"] for a in answers}) == 1
    assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
    assert Books(cluster_redis, sku).sold == 1

    reused = run_burst(cluster.urls[1:2], 1, f"/orders?strategy={strategy}",
                       body={"sku": sku, "quantity": 2},
                       headers=lambda i: {"Idempotency-Key": f"seq-{strategy}"})[0]
    assert reused.status == 422
    assert Books(cluster_redis, sku).sold == 1


def concurrent_retries(cluster, strategy, sku):
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 50})
    return run_burst(cluster.urls, 12, f"/orders?strategy={strategy}", body={"sku": sku},
                     headers=lambda i: {"Idempotency-Key": f"burst-{sku}"})


def assert_ordered_once(answers, books):
    assert books.sold == 1 and len(books.orders) == 1
    assert {a.status for a in answers} == {201}
    assert {a.body["order_id"] for a in answers} == {books.orders[0]["order_id"]}


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_concurrent_retries_with_one_key_order_once(cluster, cluster_redis, strategy):
    sku = f"idem-burst-{strategy}"
    answers = concurrent_retries(cluster, strategy, sku)
    assert_ordered_once(answers, Books(cluster_redis, sku))
    assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in answers) == 1


def test_without_a_lock_concurrent_retries_order_many_times(cluster, cluster_redis):
    sku = "idem-burst-none"
    answers = concurrent_retries(cluster, "none", sku)
    with pytest.raises(AssertionError):
        assert_ordered_once(answers, Books(cluster_redis, sku))
