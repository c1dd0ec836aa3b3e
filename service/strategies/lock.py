"""``lock``: application code reads the stock, decides and writes, inside a per-SKU FencedLock.

The write goes through ``lua/commit_order.lua``, which refuses it unless the holder's fencing
token is still the newest: a holder whose lease ran out cannot write a stale stock value, and
neither can one whose read was overtaken by a ``lua`` order or a stock change on the same SKU
(both advance the fencing counter). A refused order answers 503 and records nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from .. import metrics
from ..config import Settings
from ..lock import FencedLock, LockError, holder_token
from ..model import IDEMPOTENCY_FIELDS, LockLost, LockTimeout, Outcome, PendingOrder
from ..redis_client import REDIS_ERRORS
from ..scripts import OrderScripts

log = logging.getLogger(__name__)


class ReadDecideWrite:
    """Read stock, decide in Python, write the decision: the shape the original service had."""

    name = ""

    def __init__(self, settings: Settings, client: redis.Redis, scripts: OrderScripts) -> None:
        self.settings = settings
        self.redis = client
        self.commit_order = scripts.commit_order

    @staticmethod
    def queue_reads(order: PendingOrder) -> Callable[[Pipeline], None]:
        """What the decision needs: the stock, and the request's idempotency record if any."""
        def queue(pipe: Pipeline) -> None:
            pipe.get(order.keys.stock)
            for record in order.idempotency_keys:
                pipe.hmget(record, IDEMPOTENCY_FIELDS)
        return queue

    @staticmethod
    def recorded(reads: list[Any]) -> bool:
        """Whether ``reads`` (see ``queue_reads``) found this request's idempotency record."""
        return any(record[0] is not None for record in reads[1:])

    def decide_and_write(self, order: PendingOrder, reads: list[Any],
                         lock: FencedLock | None) -> Outcome:
        """Decide from ``reads`` (see ``queue_reads``) and write, releasing ``lock`` with it."""
        stock, *record = reads
        if record:
            replayed = order.replay(record[0])
            if replayed is not None:
                return replayed

        stock = int(stock or 0)
        quantity = order.request.quantity
        created = stock >= quantity
        stock_left = stock - quantity if created else stock
        if self.settings.critical_section_delay_s:
            time.sleep(self.settings.critical_section_delay_s)
        if created or record or lock is not None:
            keys = order.keys
            fencing_token = lock.fencing_token if lock and self.settings.fencing else ""
            written, released = self.commit_order(
                keys=[*keys.lock_keys, keys.stock, keys.sold, keys.order(order.order_id),
                      *order.idempotency_keys],
                args=[*(lock.handoff_args() if lock else ["", 0, ""]), fencing_token,
                      int(created), stock_left, *order.record_args],
            )
            if released:
                lock.forget()
            if not written:
                metrics.fencing_refused()
                raise LockLost(
                    f"The lock on {order.request.sku} passed to another holder before this "
                    "order was written; nothing was recorded"
                )
        return order.outcome(int(created), order.order_id if created else "", stock_left)


class LockStrategy(ReadDecideWrite):
    name = "lock"

    def __init__(self, settings: Settings, client: redis.Redis, scripts: OrderScripts) -> None:
        super().__init__(settings, client, scripts)
        self._turns: threading.BoundedSemaphore | None = None
        self.waiters = 0
        self.limit_waiters(settings.lock_waiters or 0)

    def limit_waiters(self, most: int) -> None:
        """At most ``most`` orders of this process hold or wait for a lock at once (0: any
        number); the next one answers 503 lock-timeout at once instead of taking a thread
        that the probes and lua orders need."""
        self.waiters = most
        self._turns = threading.BoundedSemaphore(most) if most > 0 else None

    def place(self, order: PendingOrder) -> Outcome:
        turns = self._turns
        if turns is not None and not turns.acquire(blocking=False):
            metrics.lock_timed_out()
            raise LockTimeout(
                f"{self.waiters} orders of this replica already wait for a lock; "
                "nothing was recorded"
            )
        try:
            return self._place(order)
        finally:
            if turns is not None:
                turns.release()

    def _place(self, order: PendingOrder) -> Outcome:
        """Two round trips when the lock is free: the acquire with the reads behind it, then
        commit_order, which also releases. A retry of a recorded request is answered from the
        first, not queued behind the lock (``answered``)."""
        lock = FencedLock(
            self.redis, order.keys.lock,
            timeout=self.settings.lock_ttl_ms / 1000,
            blocking_timeout=self.settings.lock_wait_ms / 1000,
            renew=self.settings.lock_renewal,
        )
        started = time.perf_counter()  # a wait that Redis failed is a Redis error, not a wait
        reads = lock.acquire_and_read(self.queue_reads(order),
                                      token=holder_token(self.settings.replica_id),
                                      answered=self.recorded)
        metrics.lock_waited(time.perf_counter() - started)
        if reads is None:
            metrics.lock_timed_out()
            raise LockTimeout(
                f"The lock on {order.request.sku} was busy for "
                f"{self.settings.lock_wait_ms} ms; nothing was recorded"
            )
        try:
            return self.decide_and_write(order, reads, lock)
        finally:
            self._release(lock)

    @staticmethod
    def _release(lock: FencedLock) -> None:
        """Release the lock unless commit_order already passed it on (its normal end)."""
        if lock.local.token is None:
            return
        # The outcome is decided (and fenced) already; a lease that ran out, or a Redis that
        # went away, only means the lock expires by itself.
        try:
            lock.release()
        except (LockError, *REDIS_ERRORS) as exc:
            log.warning("lock %s not released: %s", lock.name, exc)
