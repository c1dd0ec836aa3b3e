"""The Redis key names of the service and the order id format: the only place either is spelled.

Every key of one SKU carries the hash tag ``{<sku>}``, so all of them live in one Redis Cluster
slot and every script can touch them together. SKUs cannot contain braces (see
``SKU_PATTERN``), so the tag is always exactly the SKU.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

SKU = r"[A-Za-z0-9._:-]{1,64}"
SKU_PATTERN = re.compile(SKU)
SKU_RULE = "sku must be 1-64 characters of A-Z a-z 0-9 . _ : -"
CUSTOMER_ID_PATTERN = SKU_PATTERN  # the same alphabet and length
CUSTOMER_ID_RULE = "customer_id must be 1-64 characters of A-Z a-z 0-9 . _ : -"

ORDER_ID_PATTERN = re.compile(rf"^(?P<sku>{SKU})~[0-9a-f]{{20}}$")


def new_order_id(sku: str) -> str:
    """An id that names its SKU (so the order is found in the SKU's slot) and cannot be guessed."""
    return f"{sku}~{secrets.token_hex(10)}"


def sku_of_order(order_id: str) -> str | None:
    """The SKU an order id names; None if ``order_id`` cannot be one (``new_order_id``)."""
    match = ORDER_ID_PATTERN.match(order_id)
    return None if match is None else match["sku"]


@dataclass(frozen=True)
class SkuKeys:
    sku: str

    @property
    def tag(self) -> str:
        return "{" + self.sku + "}"

    @property
    def stock(self) -> str:
        return f"{self.tag}:stock"

    @property
    def sold(self) -> str:
        return f"{self.tag}:sold"

    @property
    def supplied(self) -> str:
        return f"{self.tag}:supplied"

    @property
    def reserved(self) -> str:
        """Units held by live reservations (orders placed with a hold)."""
        return f"{self.tag}:reserved"

    @property
    def holds(self) -> str:
        """The reserved orders' ids, scored by their deadline (Redis time, ms)."""
        return f"{self.tag}:holds"

    @property
    def customers(self) -> str:
        """Units each customer id has of the SKU, reserved and confirmed (a hash)."""
        return f"{self.tag}:customers"

    @property
    def limit(self) -> str:
        """The per-customer limit, absent when there is none."""
        return f"{self.tag}:limit"

    @property
    def reservation_keys(self) -> list[str]:
        """reserved, holds, customers: what the scripts of lua/holds.lua touch beside stock."""
        return [self.reserved, self.holds, self.customers]

    @property
    def read_mark(self) -> str:
        """A counter a confirmed read increments (REDIS_WAIT_REPLICAS): the write that gives
        its WAIT an offset at or past everything the read saw."""
        return f"{self.tag}:read-mark"

    @property
    def lock(self) -> str:
        """The SKU's lock; FencedLock derives its other keys (fence, queue, ...) from it."""
        return f"{self.tag}:lock"

    @property
    def fence(self) -> str:
        return fence_key(self.lock)

    @property
    def lock_keys(self) -> list[str]:
        return lock_keys(self.lock)

    def order(self, order_id: str) -> str:
        return self.order_prefix + order_id

    @property
    def order_prefix(self) -> str:
        """What a script puts before an order id (found in the holds) to reach its hash."""
        return f"{self.tag}:order:"

    def idempotency(self, key: str) -> str:
        """The outcome recorded for an Idempotency-Key, beside the stock it changed.

        The only record of the key: a key is scoped to its SKU (the same key with another SKU
        is another request), so a keyed order needs no master but its SKU's.
        """
        return f"{self.tag}:idem:{key}"


def _tagged(name: str) -> str:
    """``name`` if it already has a hash tag, else ``{name}``: same slot as ``name`` either way."""
    start = name.find("{")
    if start != -1:
        end = name.find("}", start + 1)
        if end > start + 1:
            return name
    return "{" + name + "}"


def fence_key(lock_name: str) -> str:
    return f"{_tagged(lock_name)}:fence"


def queue_key(lock_name: str) -> str:
    """The tokens waiting for the lock, in arrival order."""
    return f"{_tagged(lock_name)}:queue"


def deadlines_key(lock_name: str) -> str:
    """When each waiting token stops waiting (Redis time, ms)."""
    return f"{_tagged(lock_name)}:deadlines"


def lock_keys(lock_name: str) -> list[str]:
    """The lock, its fencing counter, queue and deadlines: KEYS[1..4] of the lock scripts."""
    return [lock_name, fence_key(lock_name), queue_key(lock_name), deadlines_key(lock_name)]


def grant_prefix(lock_name: str) -> str:
    """Prefix of the per-waiter lists a release pushes the fencing token to."""
    return f"{_tagged(lock_name)}:grant:"
