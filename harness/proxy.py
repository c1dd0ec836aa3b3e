"""FlakyProxy: a TCP proxy of our own between the service and Redis, for fault injection.

It adds latency to every chunk in both directions and drops connections at random (a
probability per reply chunk, so requests reach Redis but their answers are lost, the worst
case for retries); ``lose_reply_to`` loses the answer to one chosen request (it reaches Redis
and runs, its answer never comes back). ``stall`` holds every byte in both directions until
``resume`` (connections stay open), ``cut`` closes them and refuses new ones until ``resume``;
with ``replication_only`` they touch only replication links (a connection that has sent
PSYNC or SYNC), so clients sharing the proxy are served as usual. With ``ssl_context`` it
terminates TLS in front of a Redis built without it. It listens on 127.0.0.1 only and runs
its own asyncio loop in a daemon thread until ``stop``.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading

from .redis_server import free_port


class FlakyProxy:
    def __init__(self, upstream_port: int, latency_s: float = 0.0,
                 drop_probability: float = 0.0, seed: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.upstream_port = upstream_port
        self.ssl_context = ssl_context
        self.port = free_port()
        self.latency_s = latency_s
        self.drop_probability = drop_probability
        self.dropped = 0
        self._random = random.Random(seed)
        self._lose_reply_to: bytes | None = None
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()  # clear: stalled
        self._flowing.set()
        self._refusing = False
        self._only_replication = False
        self._replication: set[asyncio.StreamWriter] = set()  # writers of replication links
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="flaky-proxy")
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.ssl_context else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> FlakyProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ssl_context),
            self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Stop listening, close every connection and end every connection's task before the
        loop stops. In the loop's own thread: asyncio's Server is not thread-safe (closed from
        another thread while a connection ends, it wakes its waiters twice and fails)."""
        self._server.close()
        self._flowing.set()  # a stalled pump goes on, finds its connection closed, and ends
        await self._close_all()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if tasks:  # let the connections end by themselves; cancel what is left
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def lose_reply_to(self, marker: bytes) -> None:
        """Drop the connection instead of answering the next request that contains ``marker``
        (once): Redis runs the request, the client never hears back."""
        self._lose_reply_to = marker

    def stall(self, replication_only: bool = False) -> None:
        """Hold every chunk, in both directions, until ``resume``: the peers see a silent link
        (no error, no close), as during a network partition. Returns once the proxy holds:
        a write sent after this call cannot slip through."""
        self._only_replication = replication_only
        asyncio.run_coroutine_threadsafe(self._hold(), self._loop).result(10)

    async def _hold(self) -> None:
        self._flowing.clear()

    def cut(self, replication_only: bool = False) -> None:
        """Close the connections (replication links only, with ``replication_only``) and
        refuse new ones until ``resume``."""
        self._only_replication = replication_only
        self._refusing = True
        asyncio.run_coroutine_threadsafe(self._close_all(replication_only), self._loop).result(10)

    def resume(self) -> None:
        self._refusing = False
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _held(self, writer: asyncio.StreamWriter) -> bool:
        return not self._only_replication or writer in self._replication

    async def _close_all(self, replication_only: bool = False) -> None:
        for writer in list(self._writers):
            if not replication_only or writer in self._replication:
                writer.close()
                self._writers.discard(writer)

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        if self._refusing and not self._only_replication:
            upstream_writer.close()
            client_writer.close()
            return
        pair = {client_writer, upstream_writer}
        self._writers |= pair
        lose = asyncio.Event()  # this connection's next answer is to be lost
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, pair, replies=False, lose=lose),
            self._pump(upstream_reader, client_writer, pair, replies=True, lose=lose),
        )
        self._writers -= pair
        self._replication -= pair

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: set[asyncio.StreamWriter], replies: bool, lose: asyncio.Event) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                if not replies and (b"PSYNC" in chunk or b"SYNC" in chunk[:8]):
                    self._replication |= pair  # a replica asks for the replication stream
                    if self._refusing:
                        break
                while not self._flowing.is_set() and self._held(writer):
                    await self._flowing.wait()
                marker = self._lose_reply_to
                if not replies and marker is not None and marker in chunk:
                    self._lose_reply_to = None
                    lose.set()  # before the request goes on, so its answer cannot slip by
                if replies and (lose.is_set()
                                or self._random.random() < self.drop_probability):
                    self.dropped += 1
                    break  # the request was served, its answer is lost
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        for each in pair:
            each.close()
