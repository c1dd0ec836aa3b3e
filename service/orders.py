"""The domain: place, confirm and cancel orders with a strategy; set and read stock and
per-customer limits; read recorded orders.

Nothing here knows about HTTP; nothing above this module knows about Redis keys.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis
from redis.cluster import RedisCluster

from . import metrics
from .config import Settings
from .keys import SkuKeys, new_order_id, sku_of_order
from .lock import FencedLock
from .model import (
    UNCHANGED,
    OrderNotFound,
    OrderRequest,
    Outcome,
    OutcomeUnknown,
    PendingOrder,
    Settlement,
    StockLevels,
)
from .records import OrderRecord
from .redis_client import REDIS_ERRORS, ReplicaWait, read_confirmed
from .scripts import OrderScripts
from .strategies import Strategy, build_strategies

# Of what a worker serves at once (gthread's threads, gevent's connections), kept free of lock
# waiters with LOCK_WAITERS=auto: one for a probe, one for a lua order or a stock read.
RESERVED_THREADS = 2

log = logging.getLogger(__name__)


class OrderService:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.scripts = OrderScripts.register(client)
        self.wait = ReplicaWait.from_settings(settings)
        self.strategies: dict[str, Strategy] = build_strategies(settings, client, self.scripts)

    def place_order(self, request: OrderRequest) -> Outcome:
        """Place the order: created, or out of stock (also an Outcome, ``created`` False).

        With an Idempotency-Key, the key's record lives beside the SKU's stock (one record per
        key and SKU, written with the order in the same atomic step): a retry gets the
        recorded outcome, and the order touches its SKU's master only.

        Raises IdempotencyKeyReused (the key's record on this SKU is another request's, and
        nothing was written); LockTimeout or LockLost (``lock`` strategy; both Unavailable,
        nothing was recorded); and lets redis-py's errors through unwrapped
        (redis_client.REDIS_ERRORS: Redis did not answer in time, or refused; the order may
        or may not have been recorded). errors.py answers all but the first with a 503.
        """
        pending = PendingOrder(
            request=request,
            order_id=new_order_id(request.sku),
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            idempotency_ttl_s=self.settings.idempotency_ttl_s,
        )
        return self.strategies[request.strategy].place(pending)

    def settle(self, order_id: str, action: str, strategy: str) -> Settlement:
        """Confirm or cancel (``action``) a reserved order with ``strategy``; a confirm or a
        cancel of an order already settled that way changes nothing and answers again.

        Raises OrderNotFound, OrderStateConflict (expired, or settled the other way),
        OutcomeUnknown, and as ``place_order`` LockTimeout, LockLost and redis-py's errors.
        """
        sku = sku_of_order(order_id)
        if sku is None:
            raise OrderNotFound(f"No order {order_id!r}")
        return self.strategies[strategy].settle(sku, order_id, action)

    def set_stock(self, sku: str, quantity: int | None,
                  limit: int | None | type[UNCHANGED] = UNCHANGED) -> StockLevels:
        """Set the units for sale (None: leave them) and the per-customer limit (None: no
        limit; UNCHANGED: leave it)."""
        keys = SkuKeys(sku)
        limit_arg = "" if limit is UNCHANGED else (limit or 0)
        reply, acknowledged = self.scripts.set_stock.call_and_wait(
            [keys.stock, keys.supplied, keys.fence, *keys.reservation_keys, keys.limit, keys.sold],
            ["" if quantity is None else quantity, limit_arg, keys.order_prefix], self.wait)
        *levels, expired = reply
        metrics.holds_expired(expired)
        if not acknowledged:
            raise OutcomeUnknown(
                f"Fewer than {self.wait.replicas} Redis replicas confirmed the new stock within "
                f"{self.wait.timeout_ms} ms; GET /stock/{sku} tells whether it stands")
        return StockLevels.from_reply(sku, levels)

    def stock(self, sku: str) -> StockLevels:
        """The SKU's figures, read atomically, with the units of due holds back in stock; an
        unknown SKU has all zeros."""
        keys = SkuKeys(sku)
        return StockLevels.from_reply(sku, self.scripts.read_stock(
            [keys.stock, keys.reserved, keys.sold, keys.holds, keys.limit], [keys.order_prefix]))

    def order(self, order_id: str) -> OrderRecord:
        """The order as it stands now (a reservation past its deadline is expired)."""
        sku = sku_of_order(order_id)
        if sku is None:
            raise OrderNotFound(f"No order {order_id!r}")
        keys = SkuKeys(sku)
        key = keys.order(order_id)

        def reads(pipe) -> None:  # noqa: ANN001 - a pipeline
            pipe.hgetall(key)
            pipe.time()

        (fields, (seconds, micros)), confirmed = read_confirmed(
            self.redis, key, keys.read_mark, reads, self.wait)
        if not fields:  # a write the master does not have is not on its replicas either
            raise OrderNotFound(f"No order {order_id!r}")
        if not confirmed:
            raise OutcomeUnknown(
                f"The order is recorded, but fewer than {self.wait.replicas} Redis replicas "
                f"confirmed it within {self.wait.timeout_ms} ms: a fail-over now could still "
                "lose it; ask again shortly", order_id=order_id)
        return OrderRecord.from_hash(fields).as_of(seconds * 1000 + micros // 1000)

    def redis_failure(self) -> str | None:
        """None when Redis answers PING, else why not (the readiness check). On a Redis
        Cluster, any master answering will do: one master down fails its own SKUs only, and
        must not take every replica out of the Service."""
        client = self.redis
        failure = "no master"
        for target in (client.get_primaries() if isinstance(client, RedisCluster) else [None]):
            try:
                client.ping(**({"target_nodes": target} if target is not None else {}))
                return None
            except Exception as exc:  # any failure to answer PING counts as not there
                failure = type(exc).__name__
        return failure

    def prepare_worker(self, at_once: int, connections: int) -> None:
        """Make a worker that serves ``at_once`` requests at once (gthread's threads, gevent's
        connections) ready for its first burst before it takes a request: every script loaded
        into Redis (no NOSCRIPT round trip on a first call), ``connections`` Redis connections
        opened, and lock waiters capped (``lock_waiters``).

        Called by gunicorn.conf.py once per worker, after the app is built. A Redis that does
        not answer yet only leaves the worker cold: the first requests connect as usual.
        """
        lock = self.strategies.get("lock")
        if lock is not None and self.settings.lock_waiters is None:
            lock.limit_waiters(max(1, at_once - RESERVED_THREADS))
        FencedLock(self.redis, "warm-up")  # builds the lock's scripts, once per process
        texts = [script.script for script in (*self.scripts.all(), *FencedLock.scripts())]
        try:
            for text in texts:
                self.redis.script_load(text)  # on a Redis Cluster: every master
            for pool in self._connection_pools():
                opened = [pool.get_connection() for _ in range(connections)]
                for connection in opened:
                    pool.release(connection)
        except REDIS_ERRORS as exc:
            log.warning("worker not warmed up (Redis did not answer: %s)", exc)

    def _connection_pools(self) -> list:
        if isinstance(self.redis, RedisCluster):
            return [self.redis.get_redis_connection(node).connection_pool
                    for node in self.redis.get_primaries()]
        return [self.redis.connection_pool]
