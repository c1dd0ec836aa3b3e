"""Read, decide in Python, write the decision with a commit script: what the ``lock`` strategy
does inside its lock, and the unsafe ``none`` control without one.

The reads start with ``lua/expire_holds.lua`` (due reservations give their units back before
anything is decided); the writes are ``lua/commit_order.lua`` for an order and
``lua/commit_settle.lua`` for a confirm or cancel.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from .. import metrics
from ..config import Settings
from ..keys import SkuKeys
from ..lock import FencedLock
from ..model import (
    CREATED,
    CUSTOMER_LIMIT,
    OUT_OF_STOCK,
    CustomerRequired,
    LockLost,
    OrderNotFound,
    OrderStateConflict,
    Outcome,
    PendingOrder,
    Settlement,
)
from ..records import EXPIRED, IDEMPOTENCY_FIELDS, RESERVED, SETTLED, IdempotencyRecord, OrderRecord
from ..redis_client import ReplicaWait
from ..scripts import OrderScripts

DECISIONS = {CREATED: 1, OUT_OF_STOCK: 0, CUSTOMER_LIMIT: 2}  # as commit_order takes them
Reads = Callable[[Pipeline], None]


class ReadDecideWrite:
    """Read stock, decide in Python, write the decision: the shape the original service had."""

    name = ""

    def __init__(self, settings: Settings, client: redis.Redis, scripts: OrderScripts) -> None:
        self.settings = settings
        self.redis = client
        self.commit_order = scripts.commit_order
        self.commit_settle = scripts.commit_settle
        self.expire_holds = scripts.expire_holds
        self.wait = ReplicaWait.from_settings(settings)

    # --- reads ---------------------------------------------------------------------------

    def _queue_expiry(self, pipe: Pipeline, keys: SkuKeys, token: str) -> None:
        """First of every read: expire the due holds (see lua/expire_holds.lua; ``token`` is
        the caller's lock token, '' without a lock). EVALSHA: a Redis that lost its scripts
        answers NOSCRIPT, and ``loaded`` loads it and tries again."""
        script_keys = [keys.lock, keys.fence, keys.stock, *keys.reservation_keys]
        pipe.evalsha(self.expire_holds.sha, len(script_keys), *script_keys,
                     token, keys.order_prefix)

    def loaded(self, attempt: Callable[[], Any], keys: SkuKeys) -> Any:
        """``attempt()``, once more after loading expire_holds if Redis had lost it."""
        try:
            return attempt()
        except NoScriptError:
            self.expire_holds.load(self.redis, [keys.lock])
            return attempt()

    def order_reads(self, order: PendingOrder, token: str) -> Reads:
        """What an order's decision needs: the expiry, the stock, the limit, the customer's
        units, and the request's idempotency record if any (see ``decide_and_write``)."""
        keys = order.keys

        def queue(pipe: Pipeline) -> None:
            self._queue_expiry(pipe, keys, token)
            pipe.get(keys.stock)
            pipe.get(keys.limit)
            pipe.hget(keys.customers, order.request.customer_id or "")
            for record in order.idempotency_keys:
                pipe.hmget(record, IDEMPOTENCY_FIELDS)
        return queue

    @staticmethod
    def recorded(reads: list[Any]) -> bool:
        """Whether ``reads`` (see ``order_reads``) found this request's idempotency record."""
        return any(IdempotencyRecord.found(values) for values in reads[4:])

    def settle_reads(self, keys: SkuKeys, order_id: str, token: str) -> Reads:
        """What a confirm or cancel needs: the expiry, the order, the stock."""
        def queue(pipe: Pipeline) -> None:
            self._queue_expiry(pipe, keys, token)
            pipe.hgetall(keys.order(order_id))
            pipe.get(keys.stock)
        return queue

    # --- decide and write ----------------------------------------------------------------

    def _pause(self) -> None:
        if self.settings.critical_section_delay_s:  # widens the race window (tests only)
            time.sleep(self.settings.critical_section_delay_s)

    def decide_and_write(self, order: PendingOrder, reads: list[Any],
                         lock: FencedLock | None) -> Outcome:
        """Decide from ``reads`` (see ``order_reads``) and write, releasing ``lock`` with it."""
        (_, expired), stock, limit, taken, *record = reads
        metrics.holds_expired(expired)
        if record:
            replayed = order.replay(record[0])
            if replayed is not None:
                return replayed

        request = order.request
        if limit is not None and not request.customer_id:
            raise CustomerRequired(request.sku)
        stock, quantity = int(stock or 0), request.quantity
        if limit is not None and int(taken or 0) + quantity > int(limit):
            result = CUSTOMER_LIMIT
        elif stock >= quantity:
            result = CREATED
        else:
            result = OUT_OF_STOCK
        stock_left = stock - quantity if result == CREATED else stock
        self._pause()
        status, expires = "", ""
        if result == CREATED or record or lock is not None:
            keys = order.keys
            (written, released, status, expires), acknowledged = \
                self.commit_order.call_and_wait(
                    [*keys.lock_keys, keys.stock, keys.sold, keys.order(order.order_id),
                     *keys.reservation_keys, *order.idempotency_keys],
                    [*self._handoff(lock), DECISIONS[result], stock_left, *order.record_args],
                    self.wait)
            self._written(lock, written, released, acknowledged, request.sku, "order",
                          order.order_id)
        return order.outcome(DECISIONS[result], order.order_id if result == CREATED else "",
                             stock_left, status, expires)

    def settle_from(self, keys: SkuKeys, order_id: str, action: str, reads: list[Any],
                    lock: FencedLock | None) -> Settlement:
        """Decide ``action`` on the order from ``reads`` (see ``settle_reads``) and write it;
        ``lock`` is released with the write (or by the caller, when nothing is written)."""
        (now_ms, expired), fields, stock = reads
        metrics.holds_expired(expired)
        if not fields:
            raise OrderNotFound(f"No order {order_id!r}")
        order = OrderRecord.from_hash(fields).as_of(int(now_ms))
        if order.status == SETTLED[action]:
            return Settlement(order, changed=False)
        if order.status != RESERVED:
            raise OrderStateConflict(order, action)
        self._pause()
        (written, released, expired), acknowledged = self.commit_settle.call_and_wait(
            [*keys.lock_keys, keys.order(order_id), keys.stock, keys.sold, *keys.reservation_keys],
            [*self._handoff(lock), action, int(stock or 0) + order.quantity, order_id,
             keys.order_prefix],
            self.wait)
        self._written(lock, written, released, acknowledged, keys.sku, action, order_id)
        if expired:  # its deadline passed before the write: expired instead, by the write
            metrics.holds_expired(expired)
            raise OrderStateConflict(dataclasses.replace(order, status=EXPIRED), action)
        return Settlement(dataclasses.replace(order, status=SETTLED[action]), changed=True)

    def _handoff(self, lock: FencedLock | None) -> list[Any]:
        """ARGV[1..4] of both commit scripts: the lock's hand-off and the fencing token."""
        if lock is None:
            return ["", 0, "", ""]
        return [*lock.handoff_args(), lock.fencing_token if self.settings.fencing else ""]

    def _written(self, lock: FencedLock | None, written: int, released: int,
                 acknowledged: bool, sku: str, what: str, order_id: str) -> None:
        """Raise unless a commit script's write stands (and forget a lock it passed on)."""
        if released:
            lock.forget()
        if not written:
            metrics.fencing_refused()
            raise LockLost(f"The lock on {sku} passed to another holder before this {what} "
                           "was written; nothing was recorded")
        if not acknowledged:
            raise self.wait.unconfirmed(what, order_id)
