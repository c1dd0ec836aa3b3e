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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from .. import metrics
from ..config import Settings
from ..keys import SkuKeys
from ..lock import FencedLock, LockError, LockNotReplicated, holder_token
from ..model import LockTimeout, Outcome, OutcomeUnknown, PendingOrder, Settlement
from ..redis_client import REDIS_ERRORS
from ..scripts import OrderScripts
from .read_decide_write import ReadDecideWrite, Reads

log = logging.getLogger(__name__)


class LockStrategy(ReadDecideWrite):
    name = "lock"

    def __init__(self, settings: Settings, client: redis.Redis, scripts: OrderScripts) -> None:
        super().__init__(settings, client, scripts)
        self._turns: threading.BoundedSemaphore | None = None
        self.waiters = 0
        self.limit_waiters(settings.lock_waiters or 0)

    def limit_waiters(self, most: int) -> None:
        """At most ``most`` orders of this process hold or wait for a lock at once (0: any
        number); the next one answers 503 lock-timeout at once instead of taking a thread (or,
        under gevent, a Redis connection) that the probes and lua orders need."""
        self.waiters = most
        self._turns = threading.BoundedSemaphore(most) if most > 0 else None

    def place(self, order: PendingOrder) -> Outcome:
        """Two round trips, whether the lock is free or handed over within one wait: the
        acquire with the wait and the reads behind it, then commit_order, which also releases.
        A retry of a recorded request is answered from the first, not queued behind the lock
        (``answer_keys``)."""
        with self._turn():
            lock, token = self._lock(order.keys), holder_token(self.settings.replica_id)
            reads = self.loaded(lambda: self._acquire(
                lock, self.order_reads(order, token), token, order.order_id,
                order.idempotency_keys, self.recorded),
                order.keys)
            try:
                return self.decide_and_write(order, reads, lock)
            finally:
                self._release(lock)

    def settle(self, sku: str, order_id: str, action: str) -> Settlement:
        """Inside the SKU's lock: read the order, decide, write with commit_settle (which
        releases); the same two round trips as an order."""
        keys = SkuKeys(sku)
        with self._turn():
            lock, token = self._lock(keys), holder_token(self.settings.replica_id)
            reads = self.loaded(lambda: self._acquire(
                lock, self.settle_reads(keys, order_id, token), token, order_id), keys)
            try:
                return self.settle_from(keys, order_id, action, reads, lock)
            finally:
                self._release(lock)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One of the ``waiters`` turns of this process, or LockTimeout at once."""
        turns = self._turns
        if turns is not None and not turns.acquire(blocking=False):
            metrics.lock_timed_out()
            raise LockTimeout(
                f"{self.waiters} requests of this replica already wait for a lock; "
                "nothing was recorded"
            )
        try:
            yield
        finally:
            if turns is not None:
                turns.release()

    def _lock(self, keys: SkuKeys) -> FencedLock:
        return FencedLock(
            self.redis, keys.lock,
            timeout=self.settings.lock_ttl_ms / 1000,
            blocking_timeout=self.settings.lock_wait_ms / 1000,
            renew=self.settings.lock_renewal, wait=self.wait, wait_mark=keys.read_mark,
            thread_local=False,  # one order's: a threading.local per order costs, and buys nothing
        )

    def _acquire(self, lock: FencedLock, reads: Reads, token: str, order_id: str,
                 answer_keys: Sequence[str] = (),
                 answered: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        """Acquire ``lock`` with ``reads`` behind it; their replies. Raises LockTimeout when
        the lock stayed busy, OutcomeUnknown when too few replicas have the acquisition."""
        started = time.perf_counter()  # a wait that Redis failed is a Redis error, not a wait
        try:
            replies = lock.acquire_and_read(reads, token=token, answer_keys=answer_keys,
                                            answered=answered)
        except LockNotReplicated as exc:
            raise OutcomeUnknown(
                f"{exc}: nothing was written, and the lock was given back; "
                "GET /orders/<order_id> or a retry with the same Idempotency-Key tells",
                order_id=order_id) from exc
        metrics.lock_waited(time.perf_counter() - started)
        if replies is None:
            metrics.lock_timed_out()
            raise LockTimeout(
                f"The lock on {lock.name} was busy for "
                f"{self.settings.lock_wait_ms} ms; nothing was recorded"
            )
        return replies

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
