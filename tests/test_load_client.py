"""The closed-loop load client (harness/connection.py under harness/load.py's ``closed_loop``):
against real gunicorn replicas, and against loopback servers made here that misbehave on
purpose (close early, never answer, answer garbage), which no real service should do."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from harness.books import Books
from harness.connection import Connection, request_bytes
from harness.http import put_stock
from harness.load import closed_loop
from harness.replicas import LocalReplicas

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

ANSWER = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Replica: fake\r\n"
          b"Content-Length: 13\r\n\r\n{\"sku\": \"s\"}\n")


@asynccontextmanager
async def loopback_server(handler: Handler) -> AsyncIterator[tuple[str, Counter[str]]]:
    """A server on a free loopback port; yields its URL and a count of what it saw."""
    seen: Counter[str] = Counter()

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            await handler(reader, writer)
            seen["ended"] += 1  # the handler closed it itself, or saw the client close it
        except (ConnectionError, asyncio.IncompleteReadError):
            seen["ended"] += 1
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", seen


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (head and body); the closed loop's warm-up GET is answered alike."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def run(handler: Handler, **kwargs):
    async def go():
        async with loopback_server(handler) as (url, seen):
            load = await closed_loop([url], kwargs.pop("concurrency", 1),
                                     kwargs.pop("duration_s", 5.0), "/orders",
                                     body={"sku": "s"}, **kwargs)
        return load, seen
    return asyncio.run(go())


@pytest.mark.slow
def test_against_real_replicas_every_order_is_answered_and_booked():
    with LocalReplicas(replicas=2) as replicas:
        put_stock(replicas.urls[0], "load-client", 1_000)
        load = asyncio.run(closed_loop(replicas.urls, 4, 30.0, "/orders?strategy=lua",
                                       body=lambda i: {"sku": "load-client"},
                                       max_requests=300))
        client = replicas.redis_client(decode_responses=True)
        books = Books(client, "load-client")
        assert (books.sold, books.stock, len(books.orders)) == (300, 700, 300)
        client.close()
    assert len(load.results) == 300
    assert Counter(r.status for r in load.results) == {201: 300}
    assert {r.replica for r in load.results} == {"replica-1", "replica-2"}
    assert len({r.body["order_id"] for r in load.results}) == 300
    assert all(r.body["sku"] == "load-client" for r in load.results)
    assert all(r.headers["Content-Type"] == "application/json" for r in load.results)


def test_keeps_one_connection_per_client_while_the_server_keeps_it_alive():
    events, opened = [], []

    async def keep_alive(reader, writer):
        connection = len(opened)
        opened.append(connection)
        events.append((connection, "open"))
        while True:
            request = await read_request(reader)
            events.append((connection, request.split(b" /", 1)[0].decode()))
            if request.startswith(b"POST"):
                assert request.startswith(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:")
                assert request.endswith(b'\r\nContent-Length: 12\r\n\r\n{"sku": "s"}')
            writer.write(ANSWER)

    load, seen = run(keep_alive, concurrency=3, max_requests=60)
    assert [r.status for r in load.results] == [201] * 60
    assert load.results[0].body == {"sku": "s"} and load.results[0].replica == "fake"
    assert seen["connections"] == 3
    # Warmed one after another before the clock: each answered once before the next opens.
    assert events[:6] == [(0, "open"), (0, "GET"), (1, "open"), (1, "GET"), (2, "open"),
                          (2, "GET")]
    assert Counter(event for _, event in events[6:]) == {"POST": 60}


def test_request_bytes():
    assert request_bytes("POST", "http://127.0.0.1:8000/orders?strategy=lua", b'{"a": 1}') == (
        b"POST /orders?strategy=lua HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        b"Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\": 1}")
    assert request_bytes("GET", "http://shop.test/") == (
        b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    assert request_bytes("GET", "http://shop.test") == b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n"
    assert request_bytes("GET", "http://shop.test:81/api/v1/stock/a?x=1").startswith(
        b"GET /api/v1/stock/a?x=1 HTTP/1.1\r\nHost: shop.test:81\r\n")


def test_every_connection_is_closed_when_the_run_ends():
    async def keep_alive(reader, writer):
        while True:
            await read_request(reader)
            writer.write(ANSWER)

    async def go():
        async with loopback_server(keep_alive) as (url, seen):
            load = await closed_loop([url], 4, 5.0, "/orders", body={"sku": "s"},
                                     max_requests=40)
            for _ in range(100):  # the server sees each close a moment later
                if seen["ended"] == seen["connections"]:
                    break
                await asyncio.sleep(0.05)
            return load, dict(seen)  # before the server's own close ends its handlers

    load, seen = asyncio.run(go())
    assert len(load.results) == 40
    assert seen["connections"] == seen["ended"] == 4


def test_a_connection_lost_before_its_request_fails_at_once_not_at_the_timeout():
    async def go():
        async with loopback_server(lambda reader, writer: asyncio.sleep(0)) as (url, _):
            connection = await Connection.open(url, 5.0)
            for _ in range(100):  # until the server's hang-up has reached the client
                if not connection.usable:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(connection.exchange(request_bytes("GET", url), 30.0), 5)

    asyncio.run(go())


def test_a_connection_closed_as_soon_as_it_is_accepted_fails_at_once_not_at_the_timeout():
    async def hang_up(reader, writer):
        pass

    started = time.perf_counter()
    load, seen = run(hang_up, duration_s=0.3, timeout_s=30.0)
    assert time.perf_counter() - started < 10  # far below one timeout
    assert load.results and all(r.status == 0 for r in load.results)
    assert all(r.error.startswith(("ConnectionResetError", "ConnectionAbortedError",
                                   "BrokenPipeError")) for r in load.results)


def test_an_upgrade_answer_is_recorded_and_its_connection_not_used_again():
    async def upgrade(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        await writer.drain()
        await reader.read()

    load, seen = run(upgrade, max_requests=2)
    assert [r.status for r in load.results] == [101, 101]
    assert seen["connections"] == 3  # the warm-up's, then one per request


def test_opens_a_new_connection_when_the_server_says_it_closes():
    async def one_answer_each(reader, writer):
        await read_request(reader)
        writer.write(ANSWER.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        await writer.drain()

    load, seen = run(one_answer_each, max_requests=10)
    assert [r.status for r in load.results] == [201] * 10
    assert seen["connections"] == 11  # the warm-up's, then one per order


def test_reads_a_chunked_answer():
    async def chunked(reader, writer):
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")

    load, _ = run(chunked, max_requests=3)
    assert [(r.status, r.body) for r in load.results] == [(409, {"a": 1})] * 3


def test_a_connection_lost_mid_answer_is_an_error_and_the_next_request_goes_on_a_new_one():
    async def cut_every_other(reader, writer):
        await read_request(reader)
        if cut_every_other.calls % 2 == 0:
            writer.write(ANSWER[:30])
        else:
            writer.write(ANSWER.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        cut_every_other.calls += 1
        await writer.drain()

    cut_every_other.calls = 1  # the warm-up gets a whole answer (and a closed connection)
    load, seen = run(cut_every_other, max_requests=6)
    assert [r.status for r in load.results] == [0, 201] * 3
    assert all("closed" in r.error or "Reset" in r.error for r in load.results[::2])
    assert seen["connections"] == 7


def test_an_answer_that_is_not_http_is_an_error():
    async def garbage(reader, writer):
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read()

    load, _ = run(garbage, max_requests=2)
    assert [r.status for r in load.results] == [0, 0]
    assert all(r.error.startswith("HttpParserError") for r in load.results)


def test_a_server_that_never_answers_costs_the_timeout_and_no_more():
    async def silent(reader, writer):
        await reader.read()

    started = time.perf_counter()
    load, _ = run(silent, concurrency=2, duration_s=0.5, timeout_s=0.3)
    assert time.perf_counter() - started < 5
    assert [r.status for r in load.results] == [0] * len(load.results)
    assert len(load.results) >= 2
    assert all(r.error.startswith("TimeoutError") for r in load.results)


def test_a_refused_connection_is_an_error_and_the_run_still_stops_on_time():
    async def go():
        async with loopback_server(lambda r, w: asyncio.sleep(0)) as (url, _):
            pass  # closed: nothing listens on its port any more
        return await closed_loop([url], 2, 0.3, "/orders", body={"sku": "s"})

    started = time.perf_counter()
    load = asyncio.run(go())
    assert time.perf_counter() - started < 5
    assert load.results and all(r.status == 0 for r in load.results)
    assert all(r.error.startswith("ConnectionRefusedError") for r in load.results)


def test_speaks_plain_http_only():
    with pytest.raises(ValueError, match="plain HTTP"):
        asyncio.run(closed_loop(["https://127.0.0.1:1"], 1, 1.0, "/orders"))
