"""The value objects the domain and its strategies pass around (requests, outcomes, stock
levels), and the domain's exceptions. The records the scripts write are ``records.py``.

Nothing here knows about HTTP: ``service/errors.py`` holds the one table that maps each
exception to its status, problem type and title.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .keys import SkuKeys
from .records import (
    CONFIRMED,
    SETTLED,
    IdempotencyRecord,
    OrderRecord,
    iso_time,
)


class DomainError(Exception):
    """A failure the domain reports to its caller, with a detail for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def extensions(self) -> dict[str, str]:
        """Members the problem body carries beside its detail."""
        return {}


class IdempotencyKeyReused(DomainError):
    """The key's record on this SKU belongs to another request; nothing was written."""

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was first used with another request body")


class OrderNotFound(DomainError):
    """No order with that id (or an id that cannot be one)."""


class LockTimeout(DomainError):
    """The SKU's lock was not acquired in time; nothing was recorded."""


class LockLost(DomainError):
    """The lock passed to another holder before the write; nothing was recorded."""


class CustomerRequired(DomainError):
    """The SKU has a per-customer limit and the order names no customer; nothing was written."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"{sku} has a per-customer limit: the order needs a customer_id")


class OrderStateConflict(DomainError):
    """The order is not in a state that allows what was asked (confirm an expired order,
    cancel a confirmed one, ...); nothing was written."""

    def __init__(self, order: OrderRecord, action: str) -> None:
        super().__init__(f"Order {order.order_id} is {order.status}: it cannot be "
                         f"{SETTLED[action]}")
        self.status = order.status

    @property
    def extensions(self) -> dict[str, str]:
        return {"order_status": self.status}


class OutcomeUnknown(DomainError):
    """Redis ran the write, but fewer replicas than REDIS_WAIT_REPLICAS acknowledged it in
    time: a fail-over now could lose it. It may or may not stand; ``order_id`` (when the write
    was an order) is where ``GET /orders/<id>`` tells, as does a replay of the same key."""

    def __init__(self, detail: str, order_id: str | None = None) -> None:
        super().__init__(detail)
        self.order_id = order_id

    @property
    def extensions(self) -> dict[str, str]:
        return {"order_id": self.order_id} if self.order_id else {}


@dataclass(frozen=True)
class Settlement:
    """A confirm or cancel that stands: the order as it is now, and whether this call changed
    it (False: it was settled that way already)."""

    order: OrderRecord
    changed: bool


@dataclass(frozen=True)
class OrderRequest:
    sku: str
    quantity: int
    strategy: str
    replica: str
    idempotency_key: str | None = None
    customer_id: str | None = None
    hold_s: int | None = None  # reserve for this long; None: confirmed at once

    @property
    def fingerprint(self) -> str:
        """What makes two requests with one Idempotency-Key the same request."""
        if self.customer_id is None and self.hold_s is None:
            return f"{self.sku}\n{self.quantity}"  # as keys recorded before either existed
        return f"{self.sku}\n{self.quantity}\n{self.customer_id or ''}\n{self.hold_s or 0}"


# What an order came to: its ``result``, as logs and metrics name it.
CREATED, OUT_OF_STOCK, CUSTOMER_LIMIT = "created", "out-of-stock", "customer-limit"
# The scripts' codes for the three (see lua/place_order.lua).
RESULTS = {1: CREATED, 0: OUT_OF_STOCK, 2: CUSTOMER_LIMIT}


@dataclass(frozen=True)
class Outcome:
    result: str
    order_id: str | None
    sku: str
    quantity: int
    stock_left: int
    strategy: str
    replica: str
    replayed: bool = False
    status: str | None = None  # of the order created
    expires_at: str | None = None  # of a reservation
    customer_id: str | None = None

    @property
    def created(self) -> bool:
        return self.result == CREATED


class UNCHANGED:
    """A setting left as it is (where None means "none")."""


@dataclass(frozen=True)
class StockLevels:
    """A SKU's figures: units for sale, held by live reservations, sold (confirmed); and its
    per-customer limit (None: none). stock + reserved + sold is all the stock ever supplied."""

    sku: str
    stock: int
    reserved: int
    sold: int
    per_customer_limit: int | None

    @classmethod
    def from_reply(cls, sku: str, reply: Sequence[Any]) -> StockLevels:
        """From a script's {stock, reserved, sold, limit ('' = none)} (lua/read_stock.lua)."""
        stock, reserved, sold, limit = reply
        return cls(sku, int(stock), int(reserved), int(sold), int(limit) if limit else None)


@dataclass(frozen=True)
class PendingOrder:
    """An order a strategy may record: the request plus what the service adds to it."""

    request: OrderRequest
    order_id: str
    created_at: str
    idempotency_ttl_s: int

    @cached_property  # read several times per order; a frozen dataclass has a __dict__ for it
    def keys(self) -> SkuKeys:
        return SkuKeys(self.request.sku)

    @property
    def record_args(self) -> list:
        """The ARGV tail both order scripts share (see lua/place_order.lua)."""
        r = self.request
        return [r.quantity, self.order_id, r.sku, r.strategy, r.replica, self.created_at,
                r.fingerprint, self.idempotency_ttl_s, r.customer_id or "", r.hold_s or 0]

    @property
    def idempotency_keys(self) -> list[str]:
        """KEYS entry of the idempotency record: empty when the request has no key."""
        key = self.request.idempotency_key
        return [] if key is None else [self.keys.idempotency(key)]

    def outcome(
        self, code: int, order_id: str, stock_left: int, status: str = "",
        expires_ms: int | str = "", strategy: str | None = None, replica: str | None = None,
        replayed: bool = False,
    ) -> Outcome:
        """The Outcome of a script's reply (see lua/place_order.lua for ``code``)."""
        r = self.request
        return Outcome(
            result=RESULTS[int(code)], order_id=order_id or None, sku=r.sku,
            quantity=r.quantity, stock_left=int(stock_left), strategy=strategy or r.strategy,
            replica=replica or r.replica, replayed=replayed,
            status=status or (CONFIRMED if order_id else None),
            expires_at=iso_time(expires_ms) if expires_ms not in ("", None) else None,
            customer_id=r.customer_id,
        )

    def replay(self, values: Sequence[str | None]) -> Outcome | None:
        """The outcome recorded for this request's Idempotency-Key (``values``: an HMGET of
        IDEMPOTENCY_FIELDS), None if there is no record.

        Raises IdempotencyKeyReused if the record belongs to another request.
        """
        record = IdempotencyRecord.from_values(values)
        if record is None:
            return None
        if record.fp != self.request.fingerprint:
            raise IdempotencyKeyReused()
        return self.outcome(record.code, record.order_id, record.stock_left, record.status or "",
                            record.expires_ms or "", record.strategy, record.replica,
                            replayed=True)
