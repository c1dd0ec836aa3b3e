"""The original experiment: stock 10, 40 orders at once over the replicas, for one strategy.

``run_seed`` sends the burst and reads the books back: the proof of concept's outcome is 10
created, 30 out of stock, stock 0, sold 10, and every created order readable by its id.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from .http import http_json, put_stock
from .load import Result, run_burst

STOCK = 10
ORDERS = 40




@dataclass
class SeedRun:
    strategy: str
    sku: str
    results: list[Result]
    stock_after: int
    sold_after: int
    unreadable_orders: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> Counter:
        return Counter(result.status for result in self.results)

    @property
    def created(self) -> int:
        return self.statuses[201]

    @property
    def out_of_stock(self) -> int:
        return self.statuses[409]

    @property
    def span_s(self) -> float:
        """From the first request sent to the last answer received."""
        return max(r.started_s + r.latency_s for r in self.results) - min(
            r.started_s for r in self.results)

    def per_replica(self) -> dict[str, Counter]:
        table: dict[str, Counter] = {}
        for result in self.results:
            table.setdefault(result.replica or "(no answer)", Counter())[result.status] += 1
        return dict(sorted(table.items()))

    def failures(self, initial_stock: int = STOCK) -> list[str]:
        """What breaks the original's outcome; empty when the run is right."""
        problems = []
        if self.created != initial_stock:
            problems.append(f"created {self.created}, expected {initial_stock}")
        if self.out_of_stock != len(self.results) - initial_stock:
            problems.append(f"out of stock {self.out_of_stock}, "
                            f"expected {len(self.results) - initial_stock}")
        if self.stock_after != 0:
            problems.append(f"stock left {self.stock_after}, expected 0")
        if self.sold_after != initial_stock:
            problems.append(f"sold {self.sold_after}, expected {initial_stock}")
        if self.unreadable_orders:
            problems.append(f"{len(self.unreadable_orders)} created orders not readable by id")
        return problems


def run_seed(urls: list[str], strategy: str, sku: str | None = None,
             stock: int = STOCK, orders: int = ORDERS) -> SeedRun:
    sku = sku or f"seed-{strategy}-{time.time_ns()}"
    put_stock(urls[0], sku, stock)
    results = run_burst(urls, orders, f"/orders?strategy={strategy}", body={"sku": sku})
    _, stock_body = http_json("GET", f"{urls[0]}/stock/{sku}")
    unreadable = []
    for result in results:
        if result.status == 201:
            order_id = result.body["order_id"]
            status, order = http_json("GET", f"{urls[0]}/orders/{order_id}")
            if status != 200 or order.get("sku") != sku:
                unreadable.append(order_id)
    return SeedRun(strategy, sku, results, stock_body["stock"], stock_body["sold"], unreadable)
