"""The ``throughput`` and ``spread`` scenarios: each strategy under a closed-loop load.

Every level (strategy x concurrency) gets fresh SKUs with a large stock, runs for a fixed time,
then reconciles what the clients saw with what the service reports (``GET /stock`` per SKU,
``GET /orders/<id>`` for a sample of the created orders). A level run in several rounds is
reported by ``combine_rounds``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from harness.http import http_json, put_stock
from harness.load import LoadRun, Result, closed_loop, percentile

from .cost import CostProbe

INITIAL_STOCK = 10_000_000
ORDERS_CHECKED_BY_ID = 50


@dataclass
class LevelResult:
    scenario: str
    strategy: str
    concurrency: int
    skus: int
    replicas: int
    duration_s: float
    sent: int
    created: int
    out_of_stock: int
    requests_per_s: float
    orders_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    oversold: int
    stock_after: int
    sold_after: int
    problems: list[str] = field(default_factory=list)
    costs: dict = field(default_factory=dict)  # see cost.CostProbe.stop
    rounds_orders_per_s: list[float] = field(default_factory=list)  # see combine_rounds

    def as_dict(self) -> dict:
        row = asdict(self)
        row.update(row.pop("costs"))
        return row


def summarize(scenario: str, strategy: str, concurrency: int, replicas: int, skus: list[str],
              run: LoadRun, books: dict[str, tuple[int, int]], problems: list[str],
              initial_stock: int) -> LevelResult:
    latencies = sorted(r.latency_s * 1000 for r in run.results)
    statuses = Counter(r.status for r in run.results)
    created_by_sku = Counter(r.body["sku"] for r in run.results if r.status == 201)
    oversold = sum(
        max(0, stock + sold - initial_stock, created_by_sku[sku] - initial_stock)
        for sku, (stock, sold) in books.items()
    )
    return LevelResult(
        scenario=scenario, strategy=strategy, concurrency=concurrency, skus=len(skus),
        replicas=replicas, duration_s=round(run.elapsed_s, 3), sent=len(run.results),
        created=statuses[201], out_of_stock=statuses[409],
        requests_per_s=round(run.rate, 1),
        orders_per_s=round(statuses[201] / run.elapsed_s, 1) if run.elapsed_s else 0.0,
        p50_ms=round(percentile(latencies, 0.50), 2), p95_ms=round(percentile(latencies, 0.95), 2),
        p99_ms=round(percentile(latencies, 0.99), 2), max_ms=round(latencies[-1] if latencies
                                                                    else 0.0, 2),
        errors={str(s): n for s, n in sorted(statuses.items()) if s not in (201, 409)},
        oversold=oversold, stock_after=sum(s for s, _ in books.values()),
        sold_after=sum(s for _, s in books.values()), problems=problems,
    )


def combine_rounds(rounds: list[LevelResult]) -> LevelResult:
    """One level run in several rounds, as one row: the pace of the median round by orders/s
    (the lower one of an even count), with that round's latencies and costs, and the books of
    every round (requests, answers, errors, oversold, problems, what Redis holds), so that no
    round's error or oversell is left out. ``rounds_orders_per_s`` keeps each round's rate."""
    middle = sorted(rounds, key=lambda r: r.orders_per_s)[(len(rounds) - 1) // 2]
    errors: Counter[str] = Counter()
    for level in rounds:
        errors.update(level.errors)
    return replace(
        middle, sent=sum(r.sent for r in rounds), created=sum(r.created for r in rounds),
        out_of_stock=sum(r.out_of_stock for r in rounds), errors=dict(sorted(errors.items())),
        oversold=sum(r.oversold for r in rounds), stock_after=sum(r.stock_after for r in rounds),
        sold_after=sum(r.sold_after for r in rounds),
        problems=[p for r in rounds for p in r.problems],
        rounds_orders_per_s=[r.orders_per_s for r in rounds])


def reconcile(urls: list[str], skus: list[str], results: list[Result]
              ) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per SKU (stock, sold) as the service reports them, and what disagrees with the clients."""
    problems = []
    books = {}
    for sku in skus:
        status, body = http_json("GET", f"{urls[0]}/stock/{sku}")
        if status != 200:
            problems.append(f"GET /stock/{sku} answered {status}")
            continue
        books[sku] = (body["stock"], body["sold"])
    created = [r for r in results if r.status == 201]
    by_sku = Counter(r.body["sku"] for r in created)
    for sku, (_, sold) in books.items():
        if sold != by_sku[sku]:
            problems.append(f"{sku}: clients saw {by_sku[sku]} created, Redis has sold {sold}")
    for result in random.Random(0).sample(created, min(ORDERS_CHECKED_BY_ID, len(created))):
        order_id = result.body["order_id"]
        status, order = http_json("GET", f"{urls[0]}/orders/{order_id}")
        if status != 200 or order.get("sku") != result.body["sku"]:
            problems.append(f"order {order_id} answered 201 but GET /orders gave {status}")
    return books, problems


def run_level(urls: list[str], scenario: str, strategy: str, concurrency: int,
              duration_s: float, n_skus: int, replicas: int,
              on_done: Callable[[Result], None] | None = None,
              initial_stock: int = INITIAL_STOCK, probe: CostProbe | None = None,
              path: str | None = None) -> LevelResult:
    """One level; ``path`` defaults to the service's ``/orders?strategy=<strategy>``."""
    tag = f"{scenario}-{strategy}-c{concurrency}-{time.time_ns() % 10**9}"
    skus = [f"{tag}-{i}" for i in range(n_skus)]
    for sku in skus:
        put_stock(urls[0], sku, initial_stock)
    run = asyncio.run(closed_loop(
        urls, concurrency, duration_s, path or f"/orders?strategy={strategy}",
        body=lambda i: {"sku": skus[i % n_skus]}, on_done=on_done,
        on_start=probe.start if probe else None))
    costs = probe.stop(sum(r.status == 201 for r in run.results), len(run.results)) \
        if probe else {}
    books, problems = reconcile(urls, skus, run.results)
    level = summarize(scenario, strategy, concurrency, replicas, skus, run, books, problems,
                      initial_stock)
    level.costs = costs
    return level
