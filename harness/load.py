"""The load clients: asyncio, spreading requests over the replicas round-robin.

``closed_loop`` (the benchmark's rate) runs on harness/connection.py's lean connections;
``burst`` and ``scripted`` (any method, headers, a shared pool) on one aiohttp session.

Every request's status, answering replica (``X-Replica``), latency and body are recorded.
Every call is bounded in request count and in time, and targets only the URLs it is given.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httptools

from .connection import Answer, Connection, request_bytes


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Result:
    index: int
    url: str
    status: int  # 0: no HTTP answer (connection error or client timeout)
    replica: str
    latency_s: float
    started_s: float  # since the burst began
    body: Any = None
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    tag: str = ""  # what the request was, for a scripted run's caller (see ``scripted``)


async def _send(
    session: aiohttp.ClientSession, index: int, method: str, url: str,
    json_body: Any, headers: dict[str, str], t0: float, delay_s: float = 0.0,
) -> Result:
    if delay_s:
        await asyncio.sleep(delay_s)
    started = time.perf_counter()
    try:
        async with session.request(method, url, json=json_body, headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                body = None
            return Result(index, url, response.status, response.headers.get("X-Replica", ""),
                          time.perf_counter() - started, started - t0, body,
                          headers=dict(response.headers))
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Result(index, url, 0, "", time.perf_counter() - started, started - t0,
                      error=f"{type(exc).__name__}: {exc}")


async def burst(
    urls: list[str], count: int, path: Callable[[int], str] | str, *, method: str = "POST",
    body: Callable[[int], Any] | Any = None,
    headers: Callable[[int], dict[str, str]] | dict[str, str] | None = None,
    timeout_s: float = 30.0, interval_s: float = 0.0,
    delay_s: Callable[[int], float] | None = None,
) -> list[Result]:
    """Send ``count`` requests, request i to ``urls[i % len(urls)]``, and wait for all.

    All at once, or request i ``i * interval_s`` after the first, or ``delay_s(i)`` seconds
    after the burst starts. ``path``, ``body`` and ``headers`` may be functions of the request
    index.
    """
    connector = aiohttp.TCPConnector(limit=count, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        tasks = [
            _send(session, i, method, urls[i % len(urls)] + (path(i) if callable(path) else path),
                  body(i) if callable(body) else body,
                  headers(i) if callable(headers) else dict(headers or {}), t0,
                  max(0.0, delay_s(i)) if delay_s else i * interval_s)
            for i in range(count)
        ]
        return list(await asyncio.gather(*tasks))


def run_burst(
    urls: list[str], count: int, path: Callable[[int], str] | str, **kwargs: Any
) -> list[Result]:
    """``burst`` from synchronous code."""
    return asyncio.run(burst(urls, count, path, **kwargs))


@dataclass
class LoadRun:
    """What a closed-loop run saw: every request, and how long the run took."""

    results: list[Result]
    elapsed_s: float
    started_at: float = 0.0  # time.time() when the run began (its results' started_s is 0)

    @property
    def rate(self) -> float:
        return len(self.results) / self.elapsed_s if self.elapsed_s else 0.0


async def closed_loop(
    urls: list[str], concurrency: int, duration_s: float, path: Callable[[int], str] | str,
    *, body: Callable[[int], Any] | Any = None, max_requests: int = 1_000_000,
    timeout_s: float = 10.0, on_done: Callable[[Result], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> LoadRun:
    """``concurrency`` clients, each POSTing its next request when the last is answered.

    Stops after ``duration_s`` or ``max_requests`` requests, whichever comes first; a request
    (with a new connection if it needs one) is given up after ``timeout_s``. Client c talks to
    ``urls[c % len(urls)]`` over its own keep-alive connection (a ``Connection``, far cheaper
    than aiohttp: see harness/connection.py), opening another when that one is lost.

    Before the clock starts (and ``on_start`` is called: a cost probe's start), the
    connections are opened one after another, each with a ``GET /`` answered (whatever the
    status) before the next opens. Opened in the same millisecond, a replica's gevent workers
    do not share them: the first worker to wake accepts most or all (16 connections over 2
    workers split 0/16 in 3 of 6 tries, and 6-10 each way every time when opened like this;
    docs/benchmark.md, "The load client"), and the run measures one worker. Connections
    arriving apart, as a crowd's do, are shared. Warming takes at most ``timeout_s`` in all
    and stops at the first failure; a client left without a connection opens one in the run,
    where a failure is recorded.
    """
    results: list[Result] = []
    connections: list[Connection | None] = [None] * concurrency
    issued = 0
    t0 = stop_at = 0.0

    async def client(c: int) -> None:
        nonlocal issued
        base = urls[c % len(urls)]
        while issued < max_requests and time.perf_counter() < stop_at:
            i = issued
            issued += 1
            url = base + (path(i) if callable(path) else path)
            payload = body(i) if callable(body) else body
            request = request_bytes("POST", url, None if payload is None
                                    else json.dumps(payload).encode())
            started = time.perf_counter()
            try:
                answer = await _send_on(connections, c, url, request, timeout_s)
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                result = Result(i, url, 0, "", time.perf_counter() - started, started - t0,
                                error=f"{type(exc).__name__}: {exc}")
            else:
                result = Result(i, url, answer.status, answer.headers.get("X-Replica", ""),
                                time.perf_counter() - started, started - t0,
                                _json_or_none(answer.body), headers=answer.headers)
            results.append(result)
            if on_done:
                on_done(result)

    try:
        warm_until = time.perf_counter() + timeout_s
        for c in range(concurrency):
            left = warm_until - time.perf_counter()
            if left <= 0:
                break
            base = urls[c % len(urls)]
            try:
                await _send_on(connections, c, base, request_bytes("GET", base + "/"), left)
            except (OSError, TimeoutError, httptools.HttpParserError):
                break
        if on_start:
            on_start()
        t0 = time.perf_counter()
        stop_at = t0 + duration_s
        async with asyncio.TaskGroup() as clients:  # one client's exception stops them all
            for c in range(concurrency):
                clients.create_task(client(c))
    finally:
        for connection in connections:
            if connection:
                connection.close()
    return LoadRun(results, time.perf_counter() - t0)


async def _send_on(connections: list[Connection | None], c: int, url: str, request: bytes,
                   timeout_s: float) -> Answer:
    """``request`` on client c's connection, opened first if it has none (or a lost one):
    opening and answering within ``timeout_s`` in all."""
    deadline = time.perf_counter() + timeout_s
    connection = connections[c]
    if connection is None or not connection.usable:
        connection = connections[c] = await Connection.open(url, timeout_s)
    return await connection.exchange(request, max(0.0, deadline - time.perf_counter()))


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class Client:
    """One client of a ``scripted`` run: what its script sends and waits with.

    ``send`` returns None, sending nothing, once the run's request budget is spent or its
    time is up; ``pause`` returns False, after sleeping only until then, when a pause would
    end past the run's time. A script stops at the first None or False.
    """

    def __init__(self, number: int, base: str, run: _Scripted) -> None:
        self.number = number
        self.base = base  # the replica this client talks to: urls[number % len(urls)]
        self._run = run

    async def send(self, method: str, path: str, body: Any = None, *,
                   tag: str = "") -> Result | None:
        run = self._run
        if run.issued >= run.max_requests or time.perf_counter() >= run.stop_at:
            return None
        index = run.issued
        run.issued += 1
        result = await _send(run.session, index, method, self.base + path, body, {}, run.t0)
        result.tag = tag
        run.results.append(result)
        if run.on_done:
            run.on_done(result)
        return result

    async def pause(self, seconds: float) -> bool:
        left = self._run.stop_at - time.perf_counter()
        await asyncio.sleep(max(0.0, min(seconds, left)))
        return seconds < left


@dataclass
class _Scripted:
    session: aiohttp.ClientSession
    t0: float
    stop_at: float
    max_requests: int
    on_done: Callable[[Result], None] | None
    results: list[Result] = field(default_factory=list)
    issued: int = 0


async def scripted(
    urls: list[str], clients: int, script: Callable[[Client], Awaitable[None]], *,
    duration_s: float, max_requests: int, connections: int = 64, timeout_s: float = 10.0,
    on_done: Callable[[Result], None] | None = None,
) -> LoadRun:
    """``clients`` clients, each running ``await script(client)``: any sequence of requests,
    pauses and concurrent requests of its own (a customer who orders, thinks, then pays).

    Client c talks to ``urls[c % len(urls)]``; all share one keep-alive pool of
    ``connections`` connections (a request's latency includes its wait for one). Bounded: no
    request is sent after ``duration_s`` or beyond ``max_requests``, each is given up after
    ``timeout_s``, and scripts still running at ``duration_s + timeout_s`` are cancelled. The
    results are every request's, each with the ``tag`` its script gave it.
    """
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started_at, t0 = time.time(), time.perf_counter()
        run = _Scripted(session, t0, t0 + duration_s, max_requests, on_done)
        tasks = [asyncio.ensure_future(script(Client(c, urls[c % len(urls)], run)))
                 for c in range(clients)]
        done, pending = (await asyncio.wait(tasks, timeout=duration_s + timeout_s)
                         if tasks else (set(), set()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a script's own exception is the caller's
        elapsed = time.perf_counter() - t0
    return LoadRun(run.results, elapsed, started_at)
