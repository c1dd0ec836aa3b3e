"""The original experiment: stock 10, 40 orders at once over the replicas, per strategy.

It prints the proof of concept's table (per replica: created / out of stock) and checks the
books against Redis: 10 created, 30 out of stock, stock 0, sold 10, every order readable.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .load import Result, run_burst

STOCK = 10
ORDERS = 40


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One request; with ADMIN_TOKEN in the environment, it goes as a bearer token (the
    service's stock changes need it when the service has one)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if os.environ.get("ADMIN_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['ADMIN_TOKEN']}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def put_stock(url: str, sku: str, quantity: int) -> None:
    """Set ``sku``'s stock through the service at ``url``; raises unless it answers 200."""
    status, _ = http_json("PUT", f"{url}/stock/{sku}", {"quantity": quantity})
    if status != 200:
        raise RuntimeError(f"PUT /stock/{sku} answered {status}")


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


def format_table(run: SeedRun) -> str:
    lines = [f"strategy {run.strategy}: stock {STOCK}, {len(run.results)} orders at once",
             f"  {'replica':<14}{'created':>9}{'out of stock':>14}{'other':>7}"]
    for replica, counts in run.per_replica().items():
        other = sum(n for status, n in counts.items() if status not in (201, 409))
        lines.append(f"  {replica:<14}{counts[201]:>9}{counts[409]:>14}{other:>7}")
    other = len(run.results) - run.created - run.out_of_stock
    lines.append(f"  {'total':<14}{run.created:>9}{run.out_of_stock:>14}{other:>7}")
    slowest = max(r.latency_s for r in run.results)
    lines.append(f"  stock left {run.stock_after}, sold {run.sold_after}; all {len(run.results)} "
                 f"answered in {run.span_s * 1000:.0f} ms (slowest {slowest * 1000:.0f} ms)")
    failures = run.failures()
    lines.append("  check: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    return "\n".join(lines)
