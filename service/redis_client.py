"""The service's Redis client: the one place that knows its options (timeouts, no retries,
one server, a Sentinel-watched master or a Redis Cluster), what a failing Redis raises
(``REDIS_ERRORS``), and how a write waits for replicas (``ReplicaWait``)."""

from __future__ import annotations

import select
import ssl
from dataclasses import dataclass
from typing import Any

import redis
from redis._parsers import _HiredisParser
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import AskError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from .config import Settings
from .model import OutcomeUnknown

# What a failing Redis raises: a cluster client's own errors (no slot map, a slot nobody
# serves) do not derive from RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)

try:  # select.poll as the OS has it, even once gevent's worker has patched the module
    from gevent.monkey import get_original
    _os_poll = get_original("select", "poll")
except ImportError:  # no gevent: select was never patched
    _os_poll = select.poll


class OsPollParser(_HiredisParser):
    """redis-py's hiredis parser, but an idle connection is checked with the OS's poll.

    redis-py checks every connection it takes from its pool for unread data (``can_read(0)``)
    with ``select.poll``. Under gunicorn's gevent worker that is gevent's poll, which builds
    and starts event-loop watchers for the check: about a fifth of a ``lua`` order's CPU
    (docs/benchmark/hot-path.md). A check with no timeout never waits, so the OS's poll
    answers it without the event loop. A connection that reads as ready (data, or a peer
    that closed it) is left to redis-py's own check, as are a check that may wait and a TLS
    connection.
    """

    def can_read(self, timeout: float | None = 0) -> bool:
        if (timeout != 0 or self._reader is None or self._sock is None
                or self._reader.has_data() or isinstance(self._sock, ssl.SSLSocket)):
            # A check that may wait, data already read, or TLS (decrypted bytes can wait
            # above the socket, where poll does not see them): redis-py's own check.
            return super().can_read(timeout)
        poller = _os_poll()
        poller.register(self._sock, select.POLLIN)
        return bool(poller.poll(0)) and super().can_read(timeout)


class OsPollConnection(redis.Connection):
    """A TCP connection that reads with ``OsPollParser``: how a Redis Cluster client gets the
    parser, since redis-py's cluster client drops a ``parser_class`` it is given but keeps a
    ``connection_class`` (a ``rediss://`` URL's TLS connection class still wins over it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "parser_class": OsPollParser})


def connect(settings: Settings) -> redis.Redis | redis.RedisCluster:
    """A Redis (or Redis Cluster) client whose every call gives up after REDIS_TIMEOUT_MS.

    No automatic retries: a retried EVALSHA whose first reply was lost could decrement twice.
    (A cluster client still follows MOVED and ASK redirects: those commands did not run.)
    """
    timeout = settings.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "decode_responses": True,
        "client_name": settings.redis_client_name or None,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": settings.redis_max_connections,  # per node of a cluster
    }
    if settings.redis_cluster:  # a cluster client drops a parser_class it is given
        options["connection_class"] = OsPollConnection
    else:
        options["parser_class"] = OsPollParser
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_cluster:
        # Connects at once to learn the slot map: a cluster that cannot be reached stops the
        # start-up with RedisClusterException (gunicorn then exits; Kubernetes restarts it).
        return redis.RedisCluster.from_url(settings.redis_url, **options)
    if settings.redis_sentinels:
        return _sentinel_master(settings, options)
    return redis.Redis.from_url(settings.redis_url, **options)


def _sentinel_master(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    """A client of the master the Sentinels name. Each new connection asks them where the
    master is, so after a fail-over the next connections go to the promoted replica (those to
    the old master fail, and are answered 503). REDIS_URL gives the credentials, database and
    TLS only: its host and port are the Sentinels' business."""
    from_url = parse_url(settings.redis_url)
    from_url.pop("host", None)
    from_url.pop("port", None)
    if from_url.pop("connection_class", None) is SSLConnection:
        from_url["ssl"] = True  # SentinelConnectionPool then picks its TLS connection class
    # The Sentinels are asked with the same timeouts and no retries either (redis-py would
    # otherwise retry each one with backoff, seconds per unreachable Sentinel).
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={key: options[key] for key in ("socket_timeout",
                                                       "socket_connect_timeout", "retry")},
    )
    return sentinel.master_for(settings.redis_sentinel_master, **{**options, **from_url})


def master_of(client: redis.Redis | RedisCluster, key: str) -> redis.Redis:
    """The client of the one server that runs commands on ``key``: ``client`` itself, or on a
    Redis Cluster the client of the master that serves its slot (a pipeline on it keeps one
    connection, which WAIT needs; a cluster pipeline would spread commands by key)."""
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def execute_on_master(client: redis.Redis | RedisCluster, pipe: Pipeline,
                      raise_on_error: bool = True) -> list[Any]:
    """``pipe.execute()`` for a pipeline on ``master_of(client, ...)``. That pipeline bypasses
    the cluster client's own error handling: a lost connection or a MOVED/ASK (raised, or
    among the replies) makes the cluster client learn the slot map again before the error
    goes on, so the next call finds the replica promoted in the master's place."""
    try:
        replies = pipe.execute(raise_on_error=raise_on_error)
    except Exception as exc:
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) or _moved(exc):
            _learn_slot_map(client)
        raise
    if any(_moved(reply) for reply in replies):
        _learn_slot_map(client)
    return replies


def _moved(reply: object) -> bool:
    """A MOVED or ASK redirection (redis-py strips the word from the message)."""
    return isinstance(reply, AskError)  # MovedError is an AskError


def _learn_slot_map(client: redis.Redis | RedisCluster) -> None:
    if isinstance(client, RedisCluster):
        try:
            client.nodes_manager.initialize()
        except REDIS_ERRORS:
            pass  # the next call tries again


@dataclass(frozen=True)
class ReplicaWait:
    """WAIT ``replicas`` ``timeout_ms`` behind a write, on its connection and in its round trip.

    WAIT answers how many replicas have everything this connection wrote; an answer that
    depends on a write is given only when at least ``replicas`` have it, so a fail-over to one
    of them keeps it. ``replicas`` 0: no WAIT at all.
    """

    replicas: int = 0
    timeout_ms: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaWait:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)

    def queue(self, pipe: Pipeline, mark: str | None = None) -> int:
        """Put the WAIT on ``pipe``, behind the writes; how many replies it adds (the WAIT's
        is the last). ``mark``: a key to INCR first. WAIT counts the replication offset of the
        connection's own last write (Redis 7; 6.2 counted the offset at its last command of
        any kind), so after commands that may write nothing (a read, a replay, an order out of
        stock) the INCR moves that offset past every write they saw."""
        if not self.replicas:
            return 0
        if mark is not None:
            pipe.incr(mark)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return 1 if mark is None else 2

    def confirmed(self, acknowledged: int) -> bool:
        return int(acknowledged) >= self.replicas

    def unconfirmed(self, what: str, order_id: str | None) -> OutcomeUnknown:
        """What a write of ``what`` (an order, a confirm, ...) too few replicas acknowledged
        answers: its outcome is unknown, and ``order_id`` is where to look it up."""
        return OutcomeUnknown(
            f"Fewer than {self.replicas} Redis replicas confirmed this {what} within "
            f"{self.timeout_ms} ms; it may or may not stand: GET /orders/<order_id> or a retry "
            "with the same Idempotency-Key tells", order_id=order_id)


def read_confirmed(client: redis.Redis | RedisCluster, key: str, mark: str,
                   queue_reads: Any, wait: ReplicaWait) -> tuple[list[Any], bool]:
    """Reads ``queue_reads`` puts on a pipeline, and whether ``wait``'s replicas have what
    they saw, in one round trip on the master of ``key``.

    WAIT counts the offset of the connection's own last write, and a read writes nothing: so
    the reads are followed by an INCR of ``mark`` (a key of ``key``'s slot), whose offset is
    past every write the reads saw, then the WAIT. Without replicas to wait for, plain reads.
    """
    pipe = master_of(client, key).pipeline(transaction=False)  # keyless reads (TIME) too
    queue_reads(pipe)
    if not wait.replicas:
        return execute_on_master(client, pipe), True
    wait.queue(pipe, mark)
    *replies, _, acknowledged = execute_on_master(client, pipe)
    return replies, wait.confirmed(acknowledged)
