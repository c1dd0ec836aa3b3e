"""The ``faults`` scenario: faults injected into real processes while customers keep ordering.

Each scenario runs every variant on a fresh Redis and 3 fresh replicas (for the fail-overs, a
master with a replica and 3 Sentinels, or a Redis Cluster with a replica per master): ``lua`` and
``lock``,
which must come out with nothing oversold, lost, phantom or unresolved, and an unsafe variant
(the ``none`` strategy, no fencing, no Idempotency-Key, no fsynced append-only file) that must
fail the same check. Customers arrive at a fixed rate during the whole run; the fault comes
about a third of the way in. After the run every customer left without a final answer
replays its key, and ``books.tally`` compares what they were told with what Redis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from service.keys import SkuKeys
from service.lock import held_by

from .books import Tally, tally
from .customers import Customer, Plan, Shoppers, resolve
from .http import put_stock
from .load import percentile
from .proxy import FlakyProxy
from .redis_cluster import RedisClusterNodes
from .redis_server import RedisServer
from .replicas import LocalReplicas
from .sentinel import SentinelRedis

REDIS_SETUPS = ("single", "sentinel", "cluster")


@dataclass(frozen=True)
class Variant:
    name: str
    strategy: str
    breaks: str = ""  # an unsafe variant: the invariant it is expected to break
    env: dict[str, str] = field(default_factory=dict)  # every replica
    holder_env: dict[str, str] = field(default_factory=dict)  # replica-1 only
    with_key: bool = True
    durable: bool = True  # Redis with appendonly yes + appendfsync always

    @property
    def safe(self) -> bool:
        return not self.breaks


@dataclass(frozen=True)
class Size:
    customers: int
    rate_per_s: float

    @property
    def duration_s(self) -> float:
        return self.customers / self.rate_per_s


@dataclass
class Stage:
    """What a fault function works with; it fills in ``live_urls`` and ``fault``."""

    cluster: LocalReplicas
    shoppers: Shoppers
    client: redis.Redis  # straight to Redis, never through a proxy
    sku: str
    server: RedisServer  # the one server, or the master of the SKU's data
    proxy: FlakyProxy | None
    env: dict[str, str]  # the replicas' settings (replica-1 may have more)
    live_urls: list[str]
    hit: bool = False  # the fault happened as meant (e.g. replica-1 was holding the lock)
    marks: dict[str, float] = field(default_factory=dict)  # perf_counter() of fault events
    # A fail-over's topology: the replication link to stall, the master to kill.
    redis_setup: SentinelRedis | RedisClusterNodes | None = None

    def at(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the customers' arrival period has passed."""
        plan = self.shoppers.plan
        due = self.shoppers.started_at + fraction * plan.customers / plan.rate_per_s
        time.sleep(max(0.0, due - time.perf_counter()))

    @property
    def holder(self) -> str:
        """The replica the fault hits: replica-1."""
        return self.cluster.replicas[0].replica_id

    @property
    def holder_url(self) -> str:
        return self.cluster.replicas[0].url

    def holder_holds_lock(self) -> bool:
        return held_by(self.client.get(SkuKeys(self.sku).lock), self.holder)

    def wait_for_holder_read(self, limit_s: float = 5.0) -> bool:
        """Until replica-1 reads the stock under the lock (seen with MONITOR, matched to
        replica-1's connections by their CLIENT LIST names): it is between read and write.

        A waiter's read also runs when its BLPOP times out, without the lock: so the read
        counts only if the lock is replica-1's right after it.
        """
        keys = SkuKeys(self.sku)
        stock_read = f"GET {keys.stock}"
        holder_connections: set[str] = set()
        deadline = time.monotonic() + limit_s
        with redis.Redis.from_url(self.server.url, socket_timeout=limit_s,
                                  decode_responses=True) as watcher, watcher.monitor() as monitor:
            try:
                while time.monotonic() < deadline:
                    seen = monitor.next_command()
                    if seen["client_type"] == "lua" or seen["command"] != stock_read:
                        continue  # a script's read is atomic with its write
                    address = f"{seen['client_address']}:{seen['client_port']}"
                    if address not in holder_connections:
                        holder_connections = {c["addr"] for c in self.client.client_list()
                                              if c.get("name") == self.holder}
                    if address in holder_connections and self.holder_holds_lock():
                        return True
            except redis.TimeoutError:
                pass
        return False

    def wait_for_holder(self, limit_s: float = 5.0) -> bool:
        """Until replica-1 holds the SKU's lock (its tokens start with its id)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.holder_holds_lock():
                return True
            time.sleep(0.001)
        return False


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Stage], None]
    describe: Callable[[Stage, list[Customer]], str]
    variants: tuple[Variant, ...]
    size: Size
    env: dict[str, str] = field(default_factory=dict)
    stock_share: float = 0.75  # stock set to this share of the customers: it sells out late
    proxy: bool = False
    redis: str = "single"  # or "sentinel", "cluster": a master with a replica to promote


@dataclass
class FaultRun:
    scenario: str
    variant: Variant
    tally: Tally
    hit: bool
    fault: str

    @property
    def verdict(self) -> str:
        broken = ", ".join(self.tally.violations)
        if not self.hit:
            return "fault missed its moment: " + (broken or "nothing broken")
        if self.variant.safe:
            return f"VIOLATED: {broken}" if broken else "holds"
        if any(self.variant.breaks in violation for violation in self.tally.violations):
            return f"fails as expected: {broken}"
        return f"did not break {self.variant.breaks}: " + (broken or "nothing broken")

    @property
    def as_expected(self) -> bool:
        return self.verdict.startswith(("holds", "fails as expected"))

    def as_dict(self) -> dict:
        return {"scenario": self.scenario, "variant": self.variant.name,
                "strategy": self.variant.strategy, "safe": self.variant.safe, "hit": self.hit,
                **self.tally.as_dict(), "fault": self.fault, "verdict": self.verdict,
                "as_expected": self.as_expected}


@dataclass
class RedisSetup:
    """The Redis a run's replicas use, and how to reach it."""

    server: RedisServer  # the one server, or the master of the run's SKU
    url: str  # REDIS_URL of the replicas
    env: dict[str, str] = field(default_factory=dict)  # more settings (the Sentinels)
    proxy: FlakyProxy | None = None
    topology: SentinelRedis | RedisClusterNodes | None = None

    @property
    def cluster(self) -> bool:
        return isinstance(self.topology, RedisClusterNodes)

    def books_client(self) -> redis.Redis:
        """A client of wherever the SKU's data is after the run: a cluster client (it finds
        the new slot map), the master the Sentinels name, or the one server."""
        if self.cluster:
            return self.topology.client_of_live_nodes(decode_responses=True)
        if self.topology is not None:
            return redis.Redis(host="127.0.0.1", port=self.topology.master_port(),
                               decode_responses=True)
        return redis.Redis.from_url(self.server.url, decode_responses=True)


@contextlib.contextmanager
def _redis(scenario: Scenario, variant: Variant, sku: str) -> Iterator[RedisSetup]:
    if scenario.redis == "sentinel":
        with SentinelRedis() as redis_set:
            yield RedisSetup(redis_set.master, redis_set.url, redis_set.service_env(),
                             topology=redis_set)
        return
    if scenario.redis == "cluster":
        with RedisClusterNodes(masters=3, replicas=1, node_timeout_ms=1000) as nodes:
            master = nodes.server_for(SkuKeys(sku).stock)
            yield RedisSetup(master, nodes.url, topology=nodes)
        return
    with RedisServer(durable=variant.durable) as server:
        if not scenario.proxy:
            yield RedisSetup(server, server.url)
            return
        with FlakyProxy(server.port, latency_s=0.0005) as proxy:
            yield RedisSetup(server, proxy.url, proxy=proxy)


def run_variant(scenario: Scenario, variant: Variant, scale: float = 1.0) -> FaultRun:
    size = Size(max(6, round(scenario.size.customers * scale)), scenario.size.rate_per_s)
    env = {"ENABLE_UNSAFE_STRATEGY": "1", "REDIS_TIMEOUT_MS": "300",
           **scenario.env, **variant.env}
    sku = f"{scenario.name}-{variant.strategy}"
    with _redis(scenario, variant, sku) as setup, LocalReplicas(
            replicas=3, env={**env, **setup.env}, redis_url=setup.url,
            redis="cluster" if setup.cluster else "single",
            replica_env={1: variant.holder_env}) as cluster, \
            redis.Redis.from_url(setup.server.url, decode_responses=True) as client:
        server, proxy = setup.server, setup.proxy
        stock = round(size.customers * scenario.stock_share)
        # Before the fault, but a busy machine can make this first call through the proxy slow.
        put_stock(cluster.urls[0], sku, stock, attempts=3)
        plan = Plan(cluster.urls, sku, variant.strategy, size.customers, size.rate_per_s,
                    with_key=variant.with_key)
        stage = Stage(cluster, Shoppers(plan).start(), client, sku, server, proxy, env,
                      live_urls=list(cluster.urls), redis_setup=setup.topology)
        try:
            scenario.inject(stage)
        finally:
            customers = stage.shoppers.join()
        asyncio.run(resolve(plan, customers, stage.live_urls))
        fault = scenario.describe(stage, customers)
        # Stopped gracefully, the replicas finish what they are doing: nothing can be written
        # after the books are read.
        cluster.stop()
        with setup.books_client() as books:
            result = tally(books, sku, customers)
        return FaultRun(scenario.name, variant, result, stage.hit, fault)


def answers_between(customers: list[Customer], start: float, end: float) -> list:
    return [a for c in customers for a in c.attempts if start <= a.answered_at <= end]


def first_created_after(customers: list[Customer], moment: float) -> float | None:
    """Milliseconds from ``moment`` to the first 201 answered after it."""
    times = [a.answered_at for c in customers for a in c.attempts
             if a.status == 201 and a.answered_at > moment]
    return (min(times) - moment) * 1000 if times else None


def ms(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f} ms"


def latency_summary(answers: list) -> str:
    latencies = sorted((a.answered_at - a.sent_at) * 1000 for a in answers)
    if not latencies:
        return "no answers"
    return f"p50 {percentile(latencies, 0.5):,.0f} ms, max {latencies[-1]:,.0f} ms"

