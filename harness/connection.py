"""One keep-alive HTTP/1.1 connection on asyncio: the closed-loop load's client (harness/load.py).

On a 2-core machine every microsecond the load client spends is taken from the service it
measures. aiohttp's client spends about five times wrk's CPU per request (docs/benchmark.md,
"The load client"); a closed loop needs far less than aiohttp does: one request at a time on
a connection, written as prebuilt bytes, and its answer read by httptools (llhttp, the C
parser behind uvicorn). No pool, cookies, redirects, compression or TLS: plain HTTP only.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # as the server spelled them; a repeated header keeps its last value
    body: bytes


def request_bytes(method: str, url: str, body: bytes | None = None,
                  content_type: str = "application/json") -> bytes:
    """The whole request, ready to write: ``url`` gives the Host header and the target."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + (body or b"")


class Connection(asyncio.Protocol):
    """Sends one request at a time (``exchange``) and reads its answer.

    Once ``usable`` is False (the server closed it or said it would, an answer came late or
    malformed), the connection is closed and the caller opens another.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    @classmethod
    async def open(cls, url: str, timeout_s: float) -> Connection:
        """Connect to ``url``'s host and port (``http`` only), within ``timeout_s``."""
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"{url}: the load client speaks plain HTTP only")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, connection = await loop.create_connection(cls, parts.hostname, parts.port or 80)
        return connection

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def exchange(self, request: bytes, timeout_s: float) -> Answer:
        """Write ``request`` and return its answer; TimeoutError after ``timeout_s``, an OSError
        if the connection is (or was already) lost first, httptools.HttpParserError if the
        answer is not one this client reads."""
        assert self._waiter is None, "one request at a time"
        if self._transport is None or not self.usable:  # lost since it was opened or last used
            raise ConnectionResetError("the server closed the connection")
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout_s, self._expire, timeout_s)
        try:
            self._transport.write(request)
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _expire(self, timeout_s: float) -> None:
        if self._waiter is not None and not self._waiter.done():  # not answered in the meantime
            self._fail(TimeoutError(f"no answer in {timeout_s} s"))

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # After an upgrade (101) answer, which has already been handed over, the connection
            # speaks another protocol: it is closed. Garbage fails the request waiting for it.
            self._fail(httptools.HttpParserError(f"{type(exc).__name__}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if not self._parser.should_keep_alive():
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)
        else:  # an answer nobody asked for: the stream is out of step
            self.close()
