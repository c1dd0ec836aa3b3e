"""The value objects the domain and its strategies pass around (the records the scripts write
included, as they are read back), and the domain's exceptions.

Nothing here knows about HTTP: ``service/errors.py`` holds the one table that maps each
exception to its status, problem type and title.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

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


@dataclass(frozen=True)
class OrderRecord:
    """An order's hash: its fields, in the order lua/records.lua (write_order) writes them."""

    order_id: str
    sku: str
    quantity: int
    strategy: str
    replica: str
    created_at: str

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> OrderRecord:
        """The record from the hash's fields as Redis returns them (HGETALL)."""
        return cls(**{**fields, "quantity": int(fields["quantity"])})


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

    @property
    def fingerprint(self) -> str:
        """What makes two requests with one Idempotency-Key the same request."""
        return f"{self.sku}\n{self.quantity}"


@dataclass(frozen=True)
class Outcome:
    created: bool
    order_id: str | None
    sku: str
    quantity: int
    stock_left: int
    strategy: str
    replica: str
    replayed: bool = False


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
                r.fingerprint, self.idempotency_ttl_s]

    @property
    def idempotency_keys(self) -> list[str]:
        """KEYS entry of the idempotency record: empty when the request has no key."""
        key = self.request.idempotency_key
        return [] if key is None else [self.keys.idempotency(key)]

    def outcome(
        self, code: int, order_id: str, stock_left: int,
        strategy: str | None = None, replica: str | None = None, replayed: bool = False,
    ) -> Outcome:
        r = self.request
        return Outcome(
            created=int(code) == 1, order_id=order_id or None, sku=r.sku, quantity=r.quantity,
            stock_left=int(stock_left), strategy=strategy or r.strategy,
            replica=replica or r.replica, replayed=replayed,
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
        return self.outcome(record.code, record.order_id, record.stock_left, record.strategy,
                            record.replica, replayed=True)
