"""The value objects the domain and its strategies pass around (the records the scripts write
included, as they are read back), and the domain's exceptions.

Nothing here knows about HTTP: ``service/errors.py`` holds the one table that maps each
exception to its status, problem type and title.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from .keys import SkuKeys


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


# --- The records the order scripts write (lua/records.lua), as they are read back ------------


def iso_time(epoch_ms: int | str) -> str:
    """Redis time in ms as the service writes every time: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(int(epoch_ms) / 1000, UTC).isoformat(timespec="milliseconds")


# An order's life: confirmed at once, or reserved, then confirmed, cancelled or expired.
CONFIRMED, RESERVED, CANCELLED, EXPIRED = "confirmed", "reserved", "cancelled", "expired"
# What a settle action ("confirm", "cancel") makes of a reserved order.
SETTLED = {"confirm": CONFIRMED, "cancel": CANCELLED}


@dataclass(frozen=True)
class OrderRecord:
    """An order's hash: its fields, in the order lua/records.lua (write_order) writes them
    (empty strings read as None)."""

    order_id: str
    sku: str
    quantity: int
    strategy: str
    replica: str
    created_at: str
    customer_id: str | None
    status: str
    expires_ms: int | None  # a reservation's deadline, Redis time in ms

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> OrderRecord:
        """The record from the hash's fields as Redis returns them (HGETALL). A record written
        before orders had a status is a confirmed order without a customer."""
        return cls(
            order_id=fields["order_id"], sku=fields["sku"], quantity=int(fields["quantity"]),
            strategy=fields["strategy"], replica=fields["replica"],
            created_at=fields["created_at"], customer_id=fields.get("customer_id") or None,
            status=fields.get("status") or CONFIRMED,
            expires_ms=int(fields["expires_ms"]) if fields.get("expires_ms") else None,
        )

    @classmethod
    def from_flat(cls, flat: Sequence[str]) -> OrderRecord:
        """The record from a script's HGETALL reply (field, value, field, value, ...)."""
        return cls.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))

    def as_of(self, now_ms: int) -> OrderRecord:
        """The order as it stands at Redis time ``now_ms``: a reservation past its deadline
        is expired, whether or not a script has expired it yet (the next one will)."""
        if self.status == RESERVED and self.expires_ms is not None \
                and self.expires_ms <= now_ms:
            return dataclasses.replace(self, status=EXPIRED)
        return self

    def as_json(self) -> dict:
        """The order as the API shows it: ``expires_at`` in ISO 8601 for ``expires_ms``."""
        shown = dataclasses.asdict(self)
        expires_ms = shown.pop("expires_ms")
        shown["expires_at"] = None if expires_ms is None else iso_time(expires_ms)
        return shown


@dataclass(frozen=True)
class Settlement:
    """A confirm or cancel that stands: the order as it is now, and whether this call changed
    it (False: it was settled that way already)."""

    order: OrderRecord
    changed: bool


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a request with an Idempotency-Key got: its fingerprint and its outcome. Its fields,
    in the order lua/records.lua (write_idempotency) writes them."""

    fp: str
    code: int
    order_id: str
    stock_left: int
    strategy: str
    replica: str
    status: str | None
    expires_ms: str | None

    @staticmethod
    def found(values: Sequence[str | None]) -> bool:
        """Whether an HMGET of IDEMPOTENCY_FIELDS found a record (every record has an ``fp``,
        the first field)."""
        return values[0] is not None

    @classmethod
    def from_values(cls, values: Sequence[str | None]) -> IdempotencyRecord | None:
        """The record from an HMGET of IDEMPOTENCY_FIELDS; None if nothing is recorded."""
        if not cls.found(values):
            return None
        record = dict(zip(IDEMPOTENCY_FIELDS, values, strict=True))
        return cls(**{**record, "code": int(record["code"]),
                      "stock_left": int(record["stock_left"])})


# What a read of the record from Python asks for (HMGET): its fields, in order.
IDEMPOTENCY_FIELDS = tuple(field.name for field in dataclasses.fields(IdempotencyRecord))


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
