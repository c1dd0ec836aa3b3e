"""The value objects the domain and its strategies pass around, and the domain's exceptions.

Nothing here knows about HTTP: ``service/errors.py`` holds the one table that maps each
exception to its status, problem type and title.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .keys import SkuKeys


class DomainError(Exception):
    """A failure the domain reports to its caller, with a detail for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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


# The fields of an idempotency record, in the order the scripts read and write them.
IDEMPOTENCY_FIELDS = ("fp", "code", "order_id", "stock_left", "strategy", "replica")


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


def new_order_id(sku: str) -> str:
    """An id that names its SKU (so the order is found in the SKU's slot) and cannot be guessed."""
    return f"{sku}~{secrets.token_hex(10)}"


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

    def replay(self, record: Sequence[str | None]) -> Outcome | None:
        """The recorded outcome (IDEMPOTENCY_FIELDS order), None if there is no record.

        Raises IdempotencyKeyReused if the record belongs to another request.
        """
        fp, code, order_id, stock_left, strategy, replica = record
        if fp is None:
            return None
        if fp != self.request.fingerprint:
            raise IdempotencyKeyReused()
        return self.outcome(code, order_id, stock_left, strategy, replica, replayed=True)
