"""The records the order scripts write (lua/records.lua), as Python reads them back: an
order's hash and an Idempotency-Key's record, with the states an order goes through.

Nothing here knows about HTTP or about Redis keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


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
