"""Three real gunicorn replicas on one real Redis, and again on a real 3-master Redis Cluster:
the original experiment, and idempotency."""

from __future__ import annotations

import asyncio

import pytest

from harness.books import Books
from harness.experiment import run_seed
from harness.load import burst, run_burst
from harness.replicas import LocalReplicas

from .backends import BACKENDS, RACE_ENV

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request):
    with LocalReplicas(replicas=3, env=RACE_ENV, redis=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_redis(cluster):
    client = cluster.redis_client(decode_responses=True)
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



def overlapping_bursts(cluster, slow, fast, sku, count=20, headers=None):
    """``count`` orders of the ``slow`` strategy at once (each pausing 10 ms between its read
    and its write), while ``count`` orders of the ``fast`` one arrive every 5 ms: the fast
    ones land inside the slow ones' read-write windows."""
    async def both():
        return await asyncio.gather(
            burst(cluster.urls, count, f"/orders?strategy={slow}", body={"sku": sku},
                  headers=headers),
            burst(cluster.urls, count, f"/orders?strategy={fast}", body={"sku": sku},
                  headers=headers, interval_s=0.005))

    slow_answers, fast_answers = asyncio.run(both())
    return slow_answers + fast_answers


def test_mixing_lua_and_lock_on_one_sku_never_oversells(cluster, cluster_redis):
    sku = "mixed-lua-lock"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 10})
    answers = overlapping_bursts(cluster, "lock", "lua", sku)
    books = Books(cluster_redis, sku)
    books.assert_never_oversold()
    assert sum(a.status == 201 for a in answers) == books.sold == 10
    # A lock holder overtaken by a lua order is refused by the fence: a clean 503, no record.
    refused = [a for a in answers if a.status == 503]
    assert all(a.body["type"] == "/problems/lock-lost" for a in refused)
    assert {a.status for a in answers} <= {201, 409, 503}


def test_mixing_lua_and_none_on_one_sku_oversells(cluster, cluster_redis):
    sku = "mixed-lua-none"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 10})
    overlapping_bursts(cluster, "none", "lua", sku)
    with pytest.raises(AssertionError, match="oversold"):
        Books(cluster_redis, sku).assert_never_oversold()


def test_one_key_over_both_strategies_orders_once(cluster, cluster_redis):
    sku = "mixed-idem"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 50})
    answers = overlapping_bursts(cluster, "lock", "lua", sku, count=6,
                                 headers={"Idempotency-Key": "mixed"})
    books = Books(cluster_redis, sku)
    assert books.sold == 1 and len(books.orders) == 1
    created = [a for a in answers if a.status == 201]
    assert created and {a.body["order_id"] for a in created} == {books.orders[0]["order_id"]}
    assert {a.status for a in answers} <= {201, 503}


def chunked_post(url, body: bytes):
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length) through real gunicorn."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    chunks = [body[i:i + 4096] for i in range(0, len(body), 4096)]
    connection.request("POST", "/orders", body=iter(chunks), encode_chunked=True,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    status, content_type = response.status, response.getheader("Content-Type")
    response.read()
    connection.close()
    return status, content_type


def test_chunked_body_over_16_kib_is_refused(cluster, cluster_redis):
    sku = "chunked"
    run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 5})
    padded = b'{"sku": "chunked", "quantity": 2}' + b" " * 20_000
    assert chunked_post(cluster.urls[0], padded) == (413, "application/problem+json")
    assert Books(cluster_redis, sku).sold == 0
    assert chunked_post(cluster.urls[0], b'{"sku": "chunked", "quantity": 2}')[0] == 201
