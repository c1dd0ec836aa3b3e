"""Customers for the fault scenarios: each places one order and retries like a careful client.

A customer sends its order, and after an answer that does not settle it (no answer, a 5xx,
a 503) waits a moment and tries the next replica, with the same ``Idempotency-Key`` (or, in
the unsafe control, without one), until it is told 201, 409 or another 4xx, or its patience
runs out. Customers arrive at a fixed rate whatever the service does (an open loop), so load
keeps coming while a fault is injected. Every run is bounded in customers and in time, and
talks only to the URLs it is given.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import aiohttp

# 503s that say the attempt recorded nothing (the lock was never taken, or the write was
# refused); any other 5xx, or no answer at all, leaves the attempt's fate unknown.
DEFINITE_503 = frozenset({"/problems/lock-timeout", "/problems/lock-lost"})


@dataclass(frozen=True)
class Attempt:
    url: str
    status: int  # 0: no HTTP answer (connection refused or reset, client timeout)
    problem: str  # the problem type, or the client error's name
    order_id: str | None
    sent_at: float  # time.perf_counter()
    answered_at: float

    @property
    def final(self) -> bool:
        """An answer the customer stops at: created, out of stock, or its own mistake."""
        return self.status == 201 or 400 <= self.status < 500

    @property
    def expected(self) -> bool:
        """An answer the service should give a well-formed order: a 201 with an id, a 409,
        a 503 (anything else, such as a 422 or a 500, is a fault of the service's own)."""
        return (self.status == 201 and bool(self.order_id)) or self.status in (0, 409, 503)

    @property
    def ambiguous(self) -> bool:
        """The answer does not say whether this attempt recorded an order."""
        return not self.final and not (self.status == 503 and self.problem in DEFINITE_503)


@dataclass
class Customer:
    number: int
    key: str | None
    attempts: list[Attempt] = field(default_factory=list)
    resolution: Attempt | None = None  # the replay of its key after the fault, if needed

    @property
    def answers(self) -> list[Attempt]:
        return self.attempts + ([self.resolution] if self.resolution else [])

    @property
    def order_id(self) -> str | None:
        """The id of the order the customer was told was created, if it was."""
        return next((a.order_id for a in self.answers if a.status == 201), None)

    @property
    def refused(self) -> bool:
        """Told for sure that nothing was recorded: out of stock, or a definite 503 (with no
        earlier attempt whose fate is unknown)."""
        last = self.answers[-1]
        return self.order_id is None and self.settled and (
            last.status == 409 or (last.status == 503 and last.problem in DEFINITE_503))

    @property
    def settled(self) -> bool:
        """The customer knows for sure what became of every attempt it made.

        With a key, one final answer covers all attempts (they are one request). Without,
        each attempt was a separate order, and an ambiguous one stays unknown forever.
        """
        if self.key is None:
            return not any(a.ambiguous for a in self.answers)
        last = self.answers[-1]
        return self.order_id is not None or last.final or not any(
            a.ambiguous for a in self.answers)


@dataclass(frozen=True)
class Plan:
    urls: list[str]
    sku: str
    strategy: str
    customers: int
    rate_per_s: float
    with_key: bool = True
    patience_s: float = 10.0
    request_timeout_s: float = 5.0
    retry_pause_s: float = 0.1

    @property
    def path(self) -> str:
        return f"/orders?strategy={self.strategy}"

    def key(self, number: int) -> str | None:
        return f"{self.sku}-{number}" if self.with_key else None


async def _attempt(session: aiohttp.ClientSession, url: str, sku: str,
                   key: str | None) -> Attempt:
    headers = {"Idempotency-Key": key} if key else {}
    sent = time.perf_counter()
    try:
        async with session.post(url, json={"sku": sku}, headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            body = body if isinstance(body, dict) else {}
            return Attempt(url, response.status, str(body.get("type", "")),
                           body.get("order_id"), sent, time.perf_counter())
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Attempt(url, 0, type(exc).__name__, None, sent, time.perf_counter())


async def _customer(session: aiohttp.ClientSession, plan: Plan, number: int,
                    arrives_at: float) -> Customer:
    await asyncio.sleep(max(0.0, arrives_at - time.perf_counter()))
    customer = Customer(number, plan.key(number))
    give_up_at = time.perf_counter() + plan.patience_s
    replica = number
    while True:
        url = plan.urls[replica % len(plan.urls)] + plan.path
        attempt = await _attempt(session, url, plan.sku, customer.key)
        customer.attempts.append(attempt)
        if attempt.final or time.perf_counter() + plan.retry_pause_s >= give_up_at:
            return customer
        replica += 1  # a load balancer would most likely send the retry elsewhere
        await asyncio.sleep(plan.retry_pause_s)


async def shop(plan: Plan, start: float) -> list[Customer]:
    """Customer i arrives ``i / rate_per_s`` after ``start`` (a ``time.perf_counter()``);
    returns them all when done."""
    connector = aiohttp.TCPConnector(limit=plan.customers)
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(
            _customer(session, plan, i, start + i / plan.rate_per_s)
            for i in range(plan.customers))))


async def resolve(plan: Plan, customers: list[Customer], live_urls: list[str],
                  tries: int = 5) -> None:
    """After the fault: replay the key of every customer left without a final answer, all at
    once, each at most ``tries`` times and within one patience."""
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    give_up_at = time.perf_counter() + plan.patience_s

    async def replay(session: aiohttp.ClientSession, customer: Customer) -> None:
        for n in range(tries):
            url = live_urls[(customer.number + n) % len(live_urls)] + plan.path
            customer.resolution = await _attempt(session, url, plan.sku, customer.key)
            if customer.resolution.final or time.perf_counter() >= give_up_at:
                return
            await asyncio.sleep(plan.retry_pause_s)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(replay(session, c) for c in customers
                               if c.key is not None and not c.settled))


def _shop_in_process(plan: Plan, pipe: Connection) -> None:
    """The customers' process: says it is ready, gets the start time, sends back the result."""
    try:
        pipe.send(("ready", None))
        start = pipe.recv()
        pipe.send(("done", asyncio.run(shop(plan, start))))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))


class Shoppers:
    """``shop(plan)`` in a process of its own, so the caller can inject a fault meanwhile
    without the customers' event loop delaying it (they would share one GIL in a thread).

    ``time.perf_counter()`` is the system's monotonic clock on Linux, so the customers'
    timestamps and the caller's are comparable.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.started_at = 0.0
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=_shop_in_process, args=(plan, child_end),
                                        name="customers", daemon=True)

    def _receive(self, limit_s: float, expected: str):
        if not self._pipe.poll(limit_s):
            self.stop()
            raise RuntimeError(f"customers: no {expected!r} within {limit_s:.0f} s")
        kind, value = self._pipe.recv()
        if kind != expected:
            self.stop()
            raise RuntimeError(f"customers failed:\n{value}")
        return value

    def start(self) -> Shoppers:
        self._process.start()
        self._receive(60, "ready")  # up, with aiohttp imported
        self.started_at = time.perf_counter() + 0.05
        self._pipe.send(self.started_at)
        return self

    def join(self) -> list[Customer]:
        limit = (self.plan.customers / self.plan.rate_per_s + self.plan.patience_s
                 + self.plan.request_timeout_s + 30)
        customers = self._receive(limit, "done")
        self.stop()
        return customers

    def stop(self) -> None:
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
