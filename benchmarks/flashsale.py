"""The ``flashsale`` scenario: a crowd far larger than the stock, a per-customer limit, and
reservations that are paid, cancelled or left to expire.

Per strategy (``lua``, ``lock``, and the unsafe ``none`` control), on a fresh SKU of
``Sale.stock`` units with a per-customer limit of ``Sale.limit``:

1. The crowd: ``Sale.customers`` customers arrive over ``Sale.arrival_s`` seconds (front-loaded:
   customer arrival = ``arrival_s * u**2``, u uniform, so half of them come in the first
   quarter). Each wants 1, 2 or 3 units (``Sale.wants``) and orders them one unit per order,
   each order held for ``Sale.hold_s`` seconds. Most order one unit after another; some
   (``Sale.all_at_once``) send all their orders at once, the double-click the limit must
   withstand. A customer refused for the limit stops ordering; one told out of stock (or
   answered anything else but 201) tries again after ``Sale.retry_pause_s``, at most
   ``Sale.retries`` times, while holding nothing (a customer with a unit in the cart goes to
   pay). Then, after ``Sale.think_s`` seconds, the customer pays for every unit held (POST
   /orders/<id>/confirm), cancels them all (POST /cancel), or walks away, by ``Sale.fates``:
   the walked-away holds expire and their units, like the cancelled ones, go back on sale to
   whoever is still trying.
2. Past the last deadline: ``PUT /stock`` with only the limit (set_stock expires every due
   hold first and changes no count), then the check, from ``GET /stock`` and
   ``harness.books.Books``: stock >= 0; stock + reserved + sold == supplied (== the stock set);
   the order records add up to the counters; nobody over the limit (``assert_within_limit``);
   nothing still reserved; ``GET /stock`` shows what Redis holds; and what the customers were
   told agrees with the records (every 201 recorded, every paid order confirmed, every
   cancelled one cancelled, no late payment confirmed, no customer told 201 more than the
   limit at once).

Every customer's plan comes from ``random.Random(Sale.seed)``: each strategy faces the same
crowd. The numbers are ``SALE``'s, module defaults no option changes. The crowd is bounded:
no request after ``Sale.max_s`` seconds, at most ``max_requests`` requests, each given up
after ``Sale.request_timeout_s``. A violation is reported in the row (``invariant``), never
raised: the ``none`` control is expected to break it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from harness.books import Books
from harness.customers import DEFINITE_503
from harness.http import http_json
from harness.load import Client, LoadRun, Result, percentile, scripted


@dataclass(frozen=True)
class Sale:
    """The flash sale every strategy faces. Demand (about 1.75 units a customer) is about ten
    times the stock; the limit bites for the customers who want 3."""

    customers: int = 600
    stock: int = 100
    limit: int = 2  # units per customer, reserved + confirmed
    hold_s: int = 2  # each order's reservation (the API's minimum is 1)
    arrival_s: float = 4.0  # the last customer arrives by then
    wants: tuple[tuple[int, float], ...] = ((1, 0.45), (2, 0.35), (3, 0.20))  # units, share
    all_at_once: float = 0.3  # share of customers who send all their orders at once
    fates: tuple[tuple[str, float], ...] = (("pay", 0.60), ("cancel", 0.15),
                                           ("walk away", 0.25))
    think_s: tuple[float, float] = (0.2, 0.8)  # from the last order to paying or cancelling
    retries: int = 6  # further tries after out of stock, while holding nothing
    retry_pause_s: float = 0.4
    connections: int = 64  # the pool every customer's request goes through (as behind a LB)
    request_timeout_s: float = 5.0
    max_s: float = 20.0  # no request of the crowd after this
    settle_margin_s: float = 0.3  # waited past the last deadline before the check
    seed: int = 20240611

    @property
    def max_requests(self) -> int:
        most = max(units for units, _ in self.wants)
        return self.customers * (most * (self.retries + 1) + most)


SALE = Sale()
MESSAGE_CHARS = 240  # a violation's sentence in the row (the per-customer dicts can be long)


def title() -> str:
    s = SALE
    return (f"flashsale ({s.customers} customers over {s.arrival_s:g} s, stock {s.stock}, "
            f"limit {s.limit} per customer, holds of {s.hold_s} s)")


@dataclass(frozen=True)
class Shopper:
    number: int
    arrives_s: float
    wants: int
    all_at_once: bool
    fate: str  # pay, cancel, walk away
    think_s: float

    @property
    def customer_id(self) -> str:
        return f"c{self.number}"


def _pick(rng: random.Random, choices: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([c for c, _ in choices], [w for _, w in choices])[0]


def shoppers(sale: Sale) -> list[Shopper]:
    """The crowd, the same for every run of ``sale``."""
    rng = random.Random(sale.seed)
    return [Shopper(n, sale.arrival_s * rng.random() ** 2, _pick(rng, sale.wants),
                    rng.random() < sale.all_at_once, _pick(rng, sale.fates),
                    rng.uniform(*sale.think_s))
            for n in range(sale.customers)]


def _problem(result: Result) -> str:
    body = result.body if isinstance(result.body, dict) else {}
    return str(body.get("type", "")).rsplit("/", 1)[-1]


async def _shop(client: Client, shopper: Shopper, sku: str, strategy: str, sale: Sale,
                done: list[int]) -> None:
    """One customer: order, retry while holding nothing, then pay, cancel or walk away."""
    if not await client.pause(shopper.arrives_s):
        return
    body = {"sku": sku, "customer_id": shopper.customer_id, "hold_s": sale.hold_s}
    path = f"/orders?strategy={strategy}"
    held: list[str] = []
    want, tries = shopper.wants, 0
    while want > 0:
        batch = want if shopper.all_at_once else 1
        answers = await asyncio.gather(*(client.send("POST", path, body, tag="order")
                                         for _ in range(batch)))
        created = [a.body["order_id"] for a in answers if a and a.status == 201]
        held += created
        want -= len(created)
        if None in answers or any(_problem(a) == "customer-limit" for a in answers):
            break
        if len(created) < batch:  # out of stock, or another answer: try again?
            if held or tries >= sale.retries:
                break
            tries += 1
            if not await client.pause(sale.retry_pause_s):
                break
    if held and shopper.fate != "walk away":
        action = "confirm" if shopper.fate == "pay" else "cancel"
        if not await client.pause(shopper.think_s):
            return
        await asyncio.gather(*(client.send("POST", f"/orders/{order_id}/{action}"
                                           f"?strategy={strategy}", tag=action)
                               for order_id in held))
    done.append(shopper.number)


def _deadline(result: Result) -> float:
    """A 201's reservation deadline, as epoch seconds."""
    return datetime.fromisoformat(result.body["expires_at"]).timestamp()


def _expected(result: Result) -> bool:
    """An answer the sale expects: an order created or refused (stock, limit), a payment or a
    cancellation made, or a payment refused because the hold had expired."""
    if result.tag == "order":
        return result.status == 201 or (
            result.status == 409 and _problem(result) in ("out-of-stock", "customer-limit"))
    return result.status == 200 or (result.tag == "confirm" and result.status == 409
                                    and _problem(result) == "order-state-conflict")


def check(run: LoadRun, books: Books, seen: dict, sale: Sale) -> list[str]:
    """Everything that breaks the sale's invariant, as readable sentences."""
    found = []
    for assertion in (books.assert_never_oversold, lambda: books.assert_within_limit(sale.limit)):
        try:
            assertion()
        except AssertionError as exc:
            found.append(str(exc))
    if books.supplied != sale.stock:
        found.append(f"supplied {books.supplied}, the stock set was {sale.stock}")
    if books.reserved:
        found.append(f"{books.reserved} units still reserved past every deadline")
    redis_view = (books.stock, books.reserved, books.sold, sale.limit)
    service_view = (seen.get("stock"), seen.get("reserved"), seen.get("sold"),
                    seen.get("per_customer_limit"))
    if service_view != redis_view:
        found.append(f"GET /stock (stock, reserved, sold, limit) {service_view} != Redis "
                     f"{redis_view}")
    status = {order.get("order_id"): order.get("status") for order in books.orders}
    orders = [r for r in run.results if r.tag == "order"]
    acknowledged = {r.body["order_id"] for r in orders if r.status == 201}
    unknown = sum(r.status == 0 or (r.status >= 500 and f"/problems/{_problem(r)}"
                                    not in DEFINITE_503) for r in orders)
    lost = acknowledged - set(status)
    phantom = set(status) - acknowledged
    if lost:
        found.append(f"{len(lost)} orders answered 201 have no record")
    if len(phantom) > unknown:
        found.append(f"{len(phantom)} records no customer was told about ({unknown} answers "
                     "lost)")
    for action, state in (("confirm", "confirmed"), ("cancel", "cancelled")):
        told = [r.url.rsplit("/", 2)[-2] for r in run.results
                if r.tag == action and r.status == 200]
        wrong = [order_id for order_id in told if status.get(order_id) != state]
        if wrong:
            found.append(f"{len(wrong)} orders answered 200 to {action} are not {state}")
    late = [r.url.rsplit("/", 2)[-2] for r in run.results
            if r.tag == "confirm" and r.status == 409]
    if any(status.get(order_id) == "confirmed" for order_id in late):
        found.append("a payment refused as too late was confirmed")
    by_customer: dict[str, list[Result]] = {}
    for r in orders:
        if r.status == 201:
            by_customer.setdefault(r.body["customer_id"], []).append(r)
    over = sum(len(created) > sale.limit
               and max(run.started_at + r.started_s + r.latency_s for r in created)
               < min(_deadline(r) for r in created)
               for created in by_customer.values())
    if over:
        found.append(f"{over} customers were told 201 more than {sale.limit} times within "
                     "one hold")
    return [text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."
            for text in found]


def summarize(strategy: str, sale: Sale, run: LoadRun, books: Books, seen: dict,
              finished: int) -> dict[str, Any]:
    orders = [r for r in run.results if r.tag == "order"]
    latencies = sorted(r.latency_s * 1000 for r in orders)
    span = (max((r.started_s + r.latency_s for r in orders), default=0.0)
            - min((r.started_s for r in orders), default=0.0))
    problems = Counter(_problem(r) for r in orders if r.status == 409)
    unexpected = [r for r in run.results if not _expected(r)]
    violations = check(run, books, seen, sale)
    notes = [] if finished == sale.customers else [
        f"{sale.customers - finished} customers cut off by the time or request limit"]
    return {
        "strategy": strategy, "customers": sale.customers, "stock_set": sale.stock,
        "limit": sale.limit, "hold_s": sale.hold_s, "duration_s": round(span, 3),
        "orders": len(orders), "held": sum(r.status == 201 for r in orders),
        "requests": dict(Counter(r.tag for r in run.results)),
        "sold": books.sold, "reserved": books.reserved, "stock_left": books.stock,
        "expired": books.units("expired"), "cancelled": books.units("cancelled"),
        "limit_refusals": problems["customer-limit"], "out_of_stock": problems["out-of-stock"],
        "late_payments": sum(r.tag == "confirm" and r.status == 409 for r in run.results),
        "other": {f"{tag} {status}": n for (tag, status), n in sorted(Counter(
            (r.tag, r.status) for r in unexpected if r.status < 500).items())},
        "server_errors": sum(r.status >= 500 for r in run.results),
        "orders_per_s": round(len(orders) / span, 1) if span else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(latencies[-1] if latencies else 0.0, 2),
        "violations": violations, "invariant": "; ".join(violations) or "ok", "notes": notes,
    }


def run_sale(urls: list[str], client: redis.Redis, strategy: str, sale: Sale | None = None,
             on_done: Callable[[Result], None] | None = None) -> dict[str, Any]:
    """One strategy's sale on a fresh SKU; its row. ``client`` is an administrator's client of
    the service's Redis with ``decode_responses=True``. Never raises: a failure of the run
    itself is the row's violation."""
    sale = sale or SALE
    sku = f"flashsale-{strategy}-{time.time_ns() % 10**9}"
    try:
        status, body = http_json("PUT", f"{urls[0]}/stock/{sku}",
                                 {"quantity": sale.stock, "per_customer_limit": sale.limit})
        if status != 200:
            raise RuntimeError(f"PUT /stock/{sku} answered {status}: {body}")
        crowd = shoppers(sale)
        finished: list[int] = []

        async def script(client: Client) -> None:
            await _shop(client, crowd[client.number], sku, strategy, sale, finished)

        run = asyncio.run(scripted(urls, sale.customers, script, duration_s=sale.max_s,
                                   max_requests=sale.max_requests,
                                   connections=sale.connections,
                                   timeout_s=sale.request_timeout_s, on_done=on_done))
        deadlines = [_deadline(r) for r in run.results if r.tag == "order" and r.status == 201]
        time.sleep(max(0.0, max(deadlines, default=0.0) - time.time()) + sale.settle_margin_s)
        status, swept = http_json("PUT", f"{urls[0]}/stock/{sku}",
                                  {"per_customer_limit": sale.limit})
        if status != 200:
            raise RuntimeError(f"PUT /stock/{sku} (expiring the due holds) answered {status}")
        status, seen = http_json("GET", f"{urls[0]}/stock/{sku}")
        if status != 200:
            raise RuntimeError(f"GET /stock/{sku} answered {status}")
        return summarize(strategy, sale, run, Books(client, sku), seen, len(finished))
    except Exception as exc:  # noqa: BLE001 - a run that breaks is reported, like a violation
        problem = f"the run failed: {type(exc).__name__}: {exc}"
        return {"strategy": strategy, "customers": sale.customers, "stock_set": sale.stock,
                "limit": sale.limit, "hold_s": sale.hold_s, "violations": [problem],
                "invariant": problem, "notes": []}


def notes(rows: list[dict[str, Any]], sale: Sale | None = None) -> list[str]:
    sale = sale or SALE
    text = [
        f"{sale.customers} customers (seed {sale.seed}) arrive over {sale.arrival_s:g} s, "
        f"front-loaded, each wanting 1-3 units against a stock of {sale.stock} and a limit of "
        f"{sale.limit}; {sale.all_at_once:.0%} send all their orders at once. Every order holds "
        f"one unit for {sale.hold_s} s; customers told out of stock retry up to "
        f"{sale.retries} times ({sale.retry_pause_s:g} s apart) while holding nothing; then "
        + ", ".join(f"{share:.0%} {fate}" for fate, share in sale.fates)
        + f" after {sale.think_s[0]:g}-{sale.think_s[1]:g} s. The invariant is checked "
        f"{sale.settle_margin_s:g} s past the last deadline.",
        "held: orders answered 201 (beyond the stock: units sold again after a cancel or an "
        "expiry); sold, reserved, expired, cancelled: units by the records after the last "
        "deadline; late pays: confirms refused because the hold had expired; orders/s: order "
        "requests per second from the first order sent to the last answered; latency: of the "
        "orders, including the wait for one of "
        f"{sale.connections} pooled connections.",
    ]
    for row in rows:
        text += [f"{row['strategy']}: {note}" for note in row.get("notes", [])]
    safe_broken = [r["strategy"] for r in rows if r["strategy"] != "none" and r["violations"]]
    if safe_broken:
        text.append(f"VIOLATED by {', '.join(safe_broken)}.")
    unsafe = [r for r in rows if r["strategy"] == "none"]
    if unsafe:
        text.append("The unsafe `none` control " + ("broke the invariant, as expected."
                                                   if unsafe[0]["violations"] else
                                                   "kept the invariant this time (by chance)."))
    return text
