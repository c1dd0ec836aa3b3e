"""The service's Redis client: the one place that knows its options (timeouts, no retries,
Redis Cluster or one server) and what a failing Redis raises (``REDIS_ERRORS``)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from .config import Settings

# What a failing Redis raises: a cluster client's own errors (no slot map, a slot nobody
# serves) do not derive from RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


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
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_cluster:
        # Connects at once to learn the slot map: a cluster that cannot be reached stops the
        # start-up with RedisClusterException (gunicorn then exits; Kubernetes restarts it).
        return redis.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)
