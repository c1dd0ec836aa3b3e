"""Faults injected into real processes: replicas killed or frozen, Redis restarted, a slow
or flaky link, critical sections longer than the lease.

``test_under_load`` runs every fault of ``python -m benchmarks --scenario faults`` (at a
smaller size) with customers ordering throughout; the other tests inject a fault at one exact
point with a few orders. Each safe variant's test has an unsafe twin failing the same
assertion.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis

from harness.books import Books, assert_safe
from harness.fault_scenarios import SCENARIOS as FAULTS
from harness.faults import run_variant
from harness.load import run_burst
from harness.redis_server import RedisServer
from harness.replicas import LocalReplicas
from service.keys import SkuKeys

from .waiting import wait_for

pytestmark = pytest.mark.slow

LOAD_SCALE = 0.5  # half the benchmark's customers per run


def fault_runs():
    return [pytest.param(scenario, variant, id=f"{scenario.name}: {variant.name}")
            for scenario in FAULTS.values() for variant in scenario.variants]


@pytest.mark.parametrize(("scenario", "variant"), fault_runs())
def test_under_load(scenario, variant):
    """Customers keep ordering through the fault; the safe variants hold every invariant, and
    each unsafe one breaks the invariant it is there to break (the same assertion fails)."""
    run = run_variant(scenario, variant, scale=LOAD_SCALE)
    if not run.hit:  # a run the fault missed tells nothing either way: once more
        run = run_variant(scenario, variant, scale=LOAD_SCALE)
    assert run.hit, f"the fault missed its moment: {run.fault}"
    if variant.safe:
        assert_safe(run.tally)
    else:
        with pytest.raises(AssertionError, match=variant.breaks):
            assert_safe(run.tally)


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
        # Down, Redis refuses connections at once: the timeout does not make those 503s. Up,
        # every write waits for its fsync (durable AOF), which a busy disk can stretch past
        # 300 ms: a second keeps the orders before the crash from timing out.
        env = {"REDIS_TIMEOUT_MS": "1000"}
        with LocalReplicas(replicas=3, redis_url=server.url, env=env) as cluster:
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


def freeze_a_holder(strategy="lock", fenced=True):
    """replica-1 takes an order and, between its read and its write (a 1.5 s pause, long enough
    for the SIGSTOP to land inside it on a loaded machine), is frozen (SIGSTOP) past its
    300 ms lease; replicas 2 and 3 sell 5 meanwhile; then it thaws.
    Returns (replica-1's answer, the others' answers, the books)."""
    slow = {"CRITICAL_SECTION_DELAY_MS": "1500"}
    if not fenced:
        slow["DISABLE_FENCING"] = "1"
    env = {"ENABLE_UNSAFE_STRATEGY": "1", "LOCK_TTL_MS": "300", "LOCK_WAIT_MS": "3000"}
    with LocalReplicas(replicas=3, env=env, replica_env={1: slow}) as cluster, \
            redis.Redis.from_url(cluster.redis_url, decode_responses=True) as client:
        sku = "frozen"
        run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 10})
        holder = cluster.replicas[0]
        answers: dict[str, list] = {}
        lock, stock = SkuKeys(sku).lock, SkuKeys(sku).stock
        with redis.Redis.from_url(cluster.redis_url, socket_timeout=10,
                                  decode_responses=True).monitor() as monitor:
            first = threading.Thread(target=lambda: answers.update(frozen=run_burst(
                [holder.url], 1, f"/orders?strategy={strategy}", body={"sku": sku},
                timeout_s=30)))
            first.start()
            # Freeze it inside its critical section: after its own read of the stock (not a
            # script's), before its write.
            for _ in range(1000):
                seen = monitor.next_command()
                if seen["client_type"] != "lua" and seen["command"] == f"GET {stock}":
                    break
            else:
                raise AssertionError("never saw replica-1 read the stock")
        holder.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: not client.exists(lock), "its lease runs out", limit_s=10)
            answers["others"] = run_burst(cluster.urls[1:], 5, f"/orders?strategy={strategy}",
                                          body={"sku": sku})
        finally:
            holder.signal(signal.SIGCONT)
        first.join(30)
        return answers["frozen"][0], answers["others"], Books(client, sku)


def test_a_frozen_holders_stale_write_is_refused():
    frozen, others, books = freeze_a_holder()
    assert [a.status for a in others] == [201] * 5
    assert frozen.status == 503 and frozen.body["type"] == "/problems/lock-lost"
    assert (books.stock, books.sold) == (5, 5)
    books.assert_never_oversold()


def test_without_fencing_the_thawed_holder_oversells():
    frozen, others, books = freeze_a_holder(fenced=False)
    assert frozen.status == 201 and [a.status for a in others] == [201] * 5
    with pytest.raises(AssertionError, match="oversold"):
        books.assert_never_oversold()


def kill_a_holder(lease_ms):
    """replica-1 is killed (SIGKILL) while it holds the lock (lease ``lease_ms``); then replicas
    2 and 3, willing to wait 3 s for the lock, take 5 orders. Returns (their answers, books)."""
    slow = {"CRITICAL_SECTION_DELAY_MS": "5000"}
    env = {"ENABLE_UNSAFE_STRATEGY": "1", "LOCK_TTL_MS": str(lease_ms), "LOCK_WAIT_MS": "3000"}
    with LocalReplicas(replicas=3, env=env, replica_env={1: slow}) as cluster, \
            redis.Redis.from_url(cluster.redis_url, decode_responses=True) as client:
        sku = "killed"
        run_burst(cluster.urls[:1], 1, f"/stock/{sku}", method="PUT", body={"quantity": 10})
        holder = cluster.replicas[0]
        first = threading.Thread(target=lambda: run_burst(
            [holder.url], 1, "/orders?strategy=lock", body={"sku": sku}, timeout_s=10))
        first.start()
        wait_for(lambda: client.exists(SkuKeys(sku).lock), "replica-1 holds the lock",
                 limit_s=10)
        holder.signal(signal.SIGKILL)
        first.join(15)
        others = run_burst(cluster.urls[1:], 5, "/orders?strategy=lock", body={"sku": sku})
        return others, Books(client, sku)


def assert_the_others_go_on(others, books):
    assert [a.status for a in others] == [201] * 5
    assert (books.stock, books.sold) == (5, 5)  # the killed order was never written
    books.assert_never_oversold()


def test_a_killed_holder_costs_at_most_one_lease():
    assert_the_others_go_on(*kill_a_holder(lease_ms=500))


def test_a_killed_holder_whose_lease_outlives_the_wait_blocks_the_others():
    with pytest.raises(AssertionError):
        assert_the_others_go_on(*kill_a_holder(lease_ms=10_000))
