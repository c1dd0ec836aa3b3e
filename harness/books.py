"""The invariant checker: what Redis holds for a SKU, compared with what clients were told.

``Books`` reads the SKU's figures and makes the safety assertion every oversell test makes;
``tally`` adds the customers' side after a fault scenario: every 201 is a recorded order,
nothing is recorded that no client was told was created, every answer lost to the fault is
resolved, the stock never goes below 0, and stock + reserved + sold == all stock ever set.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import redis

from service.keys import SkuKeys

from .customers import Customer


class Books:
    """What Redis holds for a SKU: the figures every safety assertion is about."""

    def __init__(self, client: redis.Redis, sku: str) -> None:
        keys = SkuKeys(sku)
        stock, reserved, sold, supplied = client.mget(
            [keys.stock, keys.reserved, keys.sold, keys.supplied])
        self.stock = int(stock or 0)
        self.reserved = int(reserved or 0)
        self.sold = int(sold or 0)
        self.supplied = int(supplied or 0)
        self.customer_counts = {customer: int(units) for customer, units
                                in client.hgetall(keys.customers).items()}
        pipe = client.pipeline(transaction=False)  # one round trip for all the records
        for key in client.scan_iter(keys.order("*"), count=1000):
            pipe.hgetall(key)
        self.orders = pipe.execute()

    def units(self, *statuses: str) -> int:
        """Units of the recorded orders in one of ``statuses`` (a record written before orders
        had a status is confirmed)."""
        return sum(int(order["quantity"]) for order in self.orders
                   if order.get("status", "confirmed") in statuses)

    def taken_by(self) -> dict[str, int]:
        """Units each customer holds, reserved or confirmed, by the order records."""
        taken: Counter[str] = Counter()
        for order in self.orders:
            if order.get("customer_id") and order.get("status") in ("reserved", "confirmed"):
                taken[order["customer_id"]] += int(order["quantity"])
        return dict(taken)

    @property
    def missing(self) -> int:
        """Units gone from stock without being reserved or sold (decremented, never recorded)."""
        return max(0, self.supplied - self.stock - self.reserved - self.sold)

    @property
    def oversold(self) -> int:
        """Units taken that were never in stock: below zero, or more stock, reserved and sold
        than ever supplied."""
        return max(0, -self.stock) + max(0, self.stock + self.reserved + self.sold
                                         - self.supplied)

    def assert_never_oversold(self) -> None:
        """Stock never below 0, stock + reserved + sold == all stock ever set, and the order
        records add up to the counters: the confirmed ones to sold, the reserved to reserved."""
        assert self.stock >= 0, f"stock went below 0: {self.stock}"
        assert self.stock + self.reserved + self.sold == self.supplied, (
            f"oversold: stock {self.stock} + reserved {self.reserved} + sold {self.sold} != "
            f"supplied {self.supplied}")
        assert self.units("confirmed") == self.sold, (
            f"confirmed order records hold {self.units('confirmed')} units, sold is {self.sold}")
        assert self.units("reserved") == self.reserved, (
            f"reserved order records hold {self.units('reserved')} units, reserved is "
            f"{self.reserved}")

    def assert_within_limit(self, limit: int) -> None:
        """No customer holds more than ``limit`` units, by the records, and the per-customer
        counts the scripts keep agree with the records."""
        taken = self.taken_by()
        over = {customer: units for customer, units in taken.items() if units > limit}
        assert not over, f"over the limit of {limit}: {over}"
        assert taken == self.customer_counts, (
            f"per-customer counts {self.customer_counts} != records {taken}")


@dataclass
class Tally:
    """One scenario run, as the report shows it."""

    sent: int  # customers, each one order (retries included)
    attempts: int  # HTTP requests they made
    acknowledged: int  # customers told 201
    refused: int  # customers told for sure that nothing was recorded (409, 503 lock-*)
    recorded: int  # order records in Redis
    # Units sold that were never in stock: in Redis (see Books.oversold), or as customers
    # were told (more orders answered 201 than units ever supplied, as when a fail-over loses
    # acknowledged orders and sells their units again; every customer orders one unit).
    oversold: int
    missing: int  # see Books.missing
    lost: int  # acknowledged orders with no record
    phantom: int  # records no customer was told about (a failure that was not, a double)
    unresolved: int  # customers who cannot know what became of an attempt
    resolved: int  # customers whose answers lost to the fault were settled by their key
    problems: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        found = [f"{getattr(self, name)} {name}" for name in
                 ("oversold", "missing", "lost", "phantom", "unresolved")
                 if getattr(self, name)]
        return found + self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "violations": self.violations}


def tally(client: redis.Redis, sku: str, customers: list[Customer]) -> Tally:
    books = Books(client, sku)
    recorded = {order["order_id"] for order in books.orders}
    acknowledged = {c.order_id for c in customers if c.order_id is not None}
    in_records = books.units("confirmed")
    problems = [] if in_records == books.sold else [
        f"order records hold {in_records} units, the sold counter {books.sold}"]
    unexpected = Counter(f"{a.status} {a.problem}".strip() for c in customers
                         for a in c.answers if not a.expected)
    problems += [f"{n} unexpected answers {answer}" for answer, n in sorted(unexpected.items())]
    if customers and not acknowledged:
        problems.append("no order was created at all")
    return Tally(
        sent=len(customers),
        attempts=sum(len(c.answers) for c in customers),
        acknowledged=len(acknowledged),
        refused=sum(c.refused for c in customers),
        recorded=len(recorded),
        oversold=max(books.oversold, len(acknowledged) - books.supplied),
        missing=books.missing,
        lost=len(acknowledged - recorded),
        phantom=len(recorded - acknowledged),
        unresolved=sum(not c.settled for c in customers),
        resolved=sum(c.key is not None and c.settled and any(a.ambiguous for a in c.answers)
                     for c in customers),
        problems=problems,
    )


def assert_safe(result: Tally) -> None:
    """The fault scenarios' one assertion: nothing oversold, lost, phantom or unresolved."""
    assert not result.violations, "violated: " + "; ".join(result.violations)
