"""A Redis fail-over under load: acknowledged orders survive it only with REDIS_WAIT_REPLICAS.

A master, its replica and 3 Sentinels (harness/sentinel.py), or a 3-master Redis Cluster with
a replica per master (harness/redis_cluster.py); the service's domain follows the Sentinels or
the slot map. Orders flow, the replication link stalls, the master is killed, the replica is
promoted, the old master comes back as its replica, orders flow again. Every order a customer
was told was created must be on the new master, every reservation a customer was told was
confirmed must be confirmed there, and (``lock``) no fencing token a holder wrote with may be
above the new master's counter. The control, WAIT off, breaks both: the
same assertions fail.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from harness.books import Books
from harness.redis_cluster import RedisClusterNodes
from harness.sentinel import SentinelRedis
from service.config import Settings
from service.keys import SkuKeys
from service.model import LockLost, LockTimeout, OrderNotFound, OrderRequest, OutcomeUnknown
from service.orders import OrderService
from service.redis_client import REDIS_ERRORS, connect
from service.strategies.read_decide_write import ReadDecideWrite

pytestmark = pytest.mark.slow

SKU = "failover"
STOCK = 1_000_000


def shop(service: OrderService, strategy: str, stop: threading.Event, told: list[str],
         unknown: list[str], paid: list[str] | None = None) -> None:
    """One customer after another, each retrying its order under its own key until it gets an
    answer that settles it (created, or refused for good). With ``paid``, each order is a
    reservation that the customer then confirms, retrying until a confirm is answered."""
    while not stop.is_set():
        request = OrderRequest(SKU, 1, strategy, "test", idempotency_key=uuid.uuid4().hex,
                               hold_s=3600 if paid is not None else None)
        created = None
        for _ in range(200):
            try:
                outcome = service.place_order(request)
            except OutcomeUnknown as exc:
                unknown.append(exc.order_id)
            except (LockTimeout, LockLost, *REDIS_ERRORS):
                pass  # nothing recorded, or Redis gone for now: try again
            else:
                if outcome.created:
                    told.append(outcome.order_id)
                    created = outcome.order_id
                break
            if stop.is_set():
                break
            time.sleep(0.02)
        if created is not None and paid is not None:
            pay(service, strategy, stop, created, paid, unknown)


def pay(service: OrderService, strategy: str, stop: threading.Event, order_id: str,
        paid: list[str], unknown: list[str]) -> None:
    """Confirm ``order_id`` until an answer says it is confirmed (a confirm is idempotent)."""
    for _ in range(200):
        try:
            service.settle(order_id, "confirm", strategy)
        except OutcomeUnknown:
            unknown.append(order_id)
        except (LockTimeout, LockLost, OrderNotFound, *REDIS_ERRORS):
            pass  # OrderNotFound: the order itself did not survive; its loss is counted
        else:
            paid.append(order_id)
            return
        if stop.is_set():
            return
        time.sleep(0.02)


class Run:
    def __init__(self, told: set[str], books: Books, unknown: list[str], fences_used: list[int],
                 fence_after: int, paid: set[str]) -> None:
        self.told, self.books, self.unknown = told, books, unknown
        self.fences_used, self.fence_after = fences_used, fence_after
        self.paid = paid

    @property
    def unpaid(self) -> set[str]:
        """Reservations a customer was told were confirmed that the new master does not have
        confirmed (or at all)."""
        confirmed = {order["order_id"] for order in self.books.orders
                     if order.get("status") == "confirmed"}
        return self.paid - confirmed

    @property
    def lost(self) -> set[str]:
        """Orders a customer was told were created that the new master does not have."""
        return self.told - {order["order_id"] for order in self.books.orders}

    @property
    def fences_above_counter(self) -> list[int]:
        """Fencing tokens of writes acknowledged before the kill that are above the counter
        the promoted master started from: the counter stepped back, and a new holder would
        get a token a stale one already wrote with."""
        return sorted(f for f in self.fences_used if f > self.fence_after)


def fail_over_under_load(topology: str, strategy: str, wait_replicas: int, monkeypatch) -> Run:
    """One run; once more if a fail-over came before the stall (a starved machine can make
    the Sentinels or the cluster promote the replica early): such a run tests nothing."""
    fences_used: list[int] = []
    decide_and_write = ReadDecideWrite.decide_and_write

    def watched(self, order, reads, lock):  # records the token of every acknowledged write
        token = lock.fencing_token if lock is not None else None
        outcome = decide_and_write(self, order, reads, lock)
        if token is not None and outcome.created and not outcome.replayed:
            fences_used.append(token)
        return outcome

    monkeypatch.setattr(ReadDecideWrite, "decide_and_write", watched)
    for _ in range(2):
        fences_used.clear()
        run = _attempt(topology, strategy, wait_replicas, fences_used)
        if run is not None:
            return run
    pytest.fail("the replica was promoted before the stall, twice")


def _attempt(topology: str, strategy: str, wait_replicas: int,
             fences_used: list[int]) -> Run | None:
    if topology == "sentinel":
        with SentinelRedis() as redis_set:
            return _run(redis_set.service_env(), strategy, wait_replicas, fences_used,
                        replica=redis_set.replica, as_started=redis_set.as_started,
                        stall=redis_set.link.stall, crash=redis_set.crash_master,
                        promote=redis_set.wait_for_failover,
                        rejoin=redis_set.rejoin_old_master,
                        books_client=lambda promoted: promoted.admin(decode_responses=True))
    with RedisClusterNodes(masters=3, replicas=1, node_timeout_ms=1000) as nodes:
        master = nodes.server_for(SkuKeys(SKU).stock)
        return _run({**nodes.service_env()}, strategy, wait_replicas, fences_used,
                    replica=nodes.replica_of(master),
                    as_started=lambda: nodes.as_started(master),
                    stall=lambda: nodes.link_of(master).stall(replication_only=True),
                    crash=master.crash, promote=lambda: nodes.wait_for_failover(master),
                    rejoin=lambda: nodes.rejoin(master),
                    books_client=lambda _: nodes.client_of_live_nodes(decode_responses=True))


def _run(env: dict[str, str], strategy: str, wait_replicas: int, fences_used: list[int], *,
         replica, as_started, stall, crash, promote, rejoin, books_client) -> Run | None:
    settings = Settings.from_env(env, redis_wait_replicas=wait_replicas,
                                 redis_wait_timeout_ms=200, redis_timeout_ms=500,
                                 replica_id="test")
    service = OrderService(settings, connect(settings))
    service.set_stock(SKU, STOCK)
    stop, told, unknown, paid = threading.Event(), [], [], []
    # Two customers place plain orders; two reserve, then pay (confirm) for each reservation.
    customers = [threading.Thread(target=shop, args=(service, strategy, stop, told, unknown,
                                                     paid if n % 2 else None))
                 for n in range(4)]
    for customer in customers:
        customer.start()
    try:
        time.sleep(1.0)
        if not as_started():
            return None
        stall()  # the replica hears nothing more from its master
        time.sleep(0.5)
        crash()
        fences_before_kill = list(fences_used)  # what holders wrote with on the old master
        # The counter the replica will start from as master: read before its promotion, while
        # nobody can write to it (a cluster replica answers reads after READONLY).
        with replica.admin(decode_responses=True) as client:
            if env.get("REDIS_CLUSTER") == "1":
                client.execute_command("READONLY")
            fence_after = int(client.get(SkuKeys(SKU).fence) or 0)
        promote()
        rejoin()  # back, empty, as the new master's replica: WAIT 1 can be met again
        time.sleep(1.0)  # orders go on against the promoted replica
    finally:
        stop.set()
        for customer in customers:
            customer.join(30)
    with books_client(replica) as client:
        books = Books(client, SKU)
    return Run(set(told), books, unknown, fences_before_kill, fence_after, set(paid))


RUNS = [pytest.param(topology, strategy, id=f"{topology}-{strategy}")
        for topology in ("sentinel", "cluster") for strategy in ("lua", "lock")]


@pytest.mark.parametrize(("topology", "strategy"), RUNS)
def test_without_wait_acknowledged_orders_are_lost_in_a_fail_over(topology, strategy,
                                                                   monkeypatch):
    """The control: the assertions the safe run makes fail here."""
    run = fail_over_under_load(topology, strategy, wait_replicas=0, monkeypatch=monkeypatch)
    assert run.told, "no order was created"
    with pytest.raises(AssertionError):
        assert run.lost == set()
    assert run.paid, "no reservation was confirmed"
    with pytest.raises(AssertionError):
        assert run.unpaid == set()
    if strategy == "lock":
        with pytest.raises(AssertionError):
            assert run.fences_above_counter == []


@pytest.mark.parametrize(("topology", "strategy"), RUNS)
def test_with_wait_every_acknowledged_order_survives_the_fail_over(topology, strategy,
                                                                   monkeypatch):
    run = fail_over_under_load(topology, strategy, wait_replicas=1, monkeypatch=monkeypatch)
    assert run.told, "no order was created"
    assert run.unknown, "no answer was withheld: the stall did not bite"
    assert run.lost == set()
    assert run.paid, "no reservation was confirmed"
    assert run.unpaid == set()
    if strategy == "lock":
        assert run.fences_used, "no lock order was acknowledged"
        assert run.fences_above_counter == []
    run.books.assert_never_oversold()


def test_a_lock_waiter_with_wait_blocks_instead_of_polling():
    """The WAIT behind a waiter's BLPOP must fit in the socket timeout, but must not squeeze
    the BLPOP to nothing: with REDIS_TIMEOUT_MS 1000 and REDIS_WAIT_TIMEOUT_MS 500, a waiter
    once called Redis every half millisecond instead of blocking."""
    from service.lock import FencedLock
    from service.redis_client import ReplicaWait

    with SentinelRedis(link=False) as redis_set, \
            redis_set.master.admin(socket_timeout=1.0) as client:
        holder = FencedLock(client, "held", timeout=10, thread_local=False)
        holder.acquire()
        releaser = threading.Timer(1.0, holder.release)
        releaser.start()
        before = lock_calls(client)
        waiter = FencedLock(client, "held", timeout=10, wait=ReplicaWait(1, 500))
        try:
            assert waiter.acquire(blocking_timeout=5)
        finally:
            releaser.join()
        calls = lock_calls(client) - before
        waiter.release()
    assert calls < 40, f"{calls} lock calls to wait about a second for one lock"


def lock_calls(client) -> int:
    """Calls of what a lock waiter sends (scripts, BLPOP, WAIT): the Sentinels' and the
    replica's own traffic to the master left out."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0)
               for name in ("evalsha", "eval", "blpop", "wait"))
