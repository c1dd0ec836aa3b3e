"""Read the stock, decide in Python, write the decision with ``lua/commit_order.lua``: what the
``lock`` strategy does inside its lock, and the unsafe ``none`` control without one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from .. import metrics
from ..config import Settings
from ..lock import FencedLock
from ..model import (
    IDEMPOTENCY_FIELDS,
    IdempotencyRecord,
    LockLost,
    Outcome,
    OutcomeUnknown,
    PendingOrder,
)
from ..redis_client import ReplicaWait
from ..scripts import OrderScripts


class ReadDecideWrite:
    """Read stock, decide in Python, write the decision: the shape the original service had."""

    name = ""

    def __init__(self, settings: Settings, client: redis.Redis, scripts: OrderScripts) -> None:
        self.settings = settings
        self.redis = client
        self.commit_order = scripts.commit_order
        self.wait = ReplicaWait.from_settings(settings)

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
        return any(IdempotencyRecord.found(values) for values in reads[1:])

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
            (written, released), acknowledged = self.commit_order.call_and_wait(
                [*keys.lock_keys, keys.stock, keys.sold, keys.order(order.order_id),
                 *order.idempotency_keys],
                [*(lock.handoff_args() if lock else ["", 0, ""]), fencing_token,
                 int(created), stock_left, *order.record_args],
                self.wait,
            )
            if released:
                lock.forget()
            if not written:
                metrics.fencing_refused()
                raise LockLost(
                    f"The lock on {order.request.sku} passed to another holder before this "
                    "order was written; nothing was recorded"
                )
            if not acknowledged:
                raise OutcomeUnknown(
                    f"Fewer than {self.wait.replicas} Redis replicas confirmed this order "
                    f"within {self.wait.timeout_ms} ms; it may or may not stand: "
                    "GET /orders/<order_id> or a retry with the same Idempotency-Key tells",
                    order_id=order.order_id)
        return order.outcome(int(created), order.order_id if created else "", stock_left)
