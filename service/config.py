"""Every setting of the service, read once from the environment, typed, with its default."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from .keys import SKU_PATTERN, SKU_RULE

STRATEGIES = ("lua", "lock")
UNSAFE_STRATEGY = "none"
LOG_FORMATS = ("text", "json")
# The watchdog renews a held lock every LOCK_TTL_MS / 3: at 100 ms, a Redis call per held lock
# every 33 ms. Shorter, the renewal thread does little else, and a lease of a few round trips
# runs out on any pause, so the fencing check refuses the holder's write (503 lock-lost).
MIN_LOCK_TTL_MS = 100
# REPLICA_ID goes into X-Replica, order records, log lines and lock tokens "<replica>/<hex>":
# printable ASCII without spaces, and without "/" so a token names exactly one replica (a
# token of "a/b" would also start with "a/"). 253: the longest Kubernetes pod name.
REPLICA_ID_PATTERN = re.compile(r"[\x21-\x2e\x30-\x7e]{1,253}")


class ConfigError(ValueError):
    """A setting in the environment cannot be used; the service refuses to start."""


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"expected a boolean (1/0, true/false), got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ConfigError(f"expected a positive integer, got {value!r}")
    return number


def _client_name(value: str) -> str:
    if any(not "!" <= char <= "~" for char in value):
        raise ConfigError(f"expected printable ASCII without spaces, got {value!r}")
    return value


def _log_format(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in LOG_FORMATS:
        raise ConfigError(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return lowered


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ConfigError(f"expected an integer >= 0, got {value!r}")
    return number


def _sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port``; an IPv6 host in brackets (``[::1]:26379``)."""
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"expected host:port, got {item!r}")
        addresses.append((host, int(port)))
    return tuple(addresses)


def _name(value: str) -> str:
    name = _client_name(value.strip())
    if not name:
        raise ConfigError("expected a name, got nothing")
    return name


def _lock_waiters(value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    return _non_negative_int(value)


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The password when REDIS_URL carries none (one in the URL wins), so the URL can sit in a
    # ConfigMap and the password in a Secret. Never printed.
    redis_password: str = field(default="", repr=False)
    # REDIS_URL names any node of a Redis Cluster; the client finds the others.
    redis_cluster: bool = False
    # Sentinels (host, port) to ask for the master named redis_sentinel_master; when set,
    # REDIS_URL supplies only the credentials, the database and TLS.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    # With N > 0, every write an answer depends on is followed, in the same round trip, by
    # WAIT N redis_wait_timeout_ms; fewer acknowledgements answer 503 outcome-unknown.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 500
    order_strategy: str = "lua"
    replica_id: str = ""  # empty: the host name, filled in by from_env
    lock_ttl_ms: int = 5000
    lock_wait_ms: int = 2000
    redis_timeout_ms: int = 1000
    # Redis connections a process may open (per Redis node); redis-py refuses the next with an
    # error, answered 503. A request holds at most one at a time (a lock waiter holds its
    # BLPOP's); gunicorn.conf.py sets this above what a worker serves at once. 100 is
    # redis-py's own default.
    redis_max_connections: int = 100
    # CLIENT SETNAME on each connection (CLIENT LIST then shows whose it is); off by default,
    # since an ACL user without @connection, or a proxy, refuses it and every call would fail.
    redis_client_name: str = ""
    default_sku: str = "default"
    enable_unsafe_strategy: bool = False
    idempotency_ttl_s: int = 86400
    # With a token, PUT /stock needs "Authorization: Bearer <token>"; without, stock changes
    # are open to anyone who reaches the service (a warning says so at start-up). Never printed.
    admin_token: str = field(default="", repr=False)
    # "text": one human line per order; "json": one JSON object per line, for log pipelines.
    log_format: str = "text"
    # Prometheus metrics at /metrics; off only to measure what they cost.
    metrics_enabled: bool = True
    # A watchdog extends the lock's lease while its holder is alive (LOCK_TTL_MS / 3 apart).
    lock_renewal: bool = True
    # How many orders of a worker may hold or wait for a SKU's lock at once; the next lock
    # order answers 503 at once (under gthread, so the probes and lua orders always find a
    # thread; under gevent, it bounds the Redis connections of a pile-up). 0 (the default):
    # no cap, a burst queues; None ("auto"): all but RESERVED_THREADS of what the worker
    # serves at once (gunicorn.conf.py tells it); the Kubernetes manifests set auto, where
    # probes that time out would empty the Service.
    lock_waiters: int | None = 0
    # Fault injection, honoured only with enable_unsafe_strategy: a pause between the read and
    # the write of the `lock` and `none` strategies, to widen the race the lock must close;
    # and the `lock` strategy's writes without the fencing check, to show what it prevents.
    critical_section_delay_ms: int = 0
    disable_fencing: bool = False

    @property
    def critical_section_delay_s(self) -> float:
        if not self.enable_unsafe_strategy:
            return 0.0
        return self.critical_section_delay_ms / 1000

    @property
    def fencing(self) -> bool:
        return not (self.disable_fencing and self.enable_unsafe_strategy)

    def allowed_strategies(self) -> tuple[str, ...]:
        if self.enable_unsafe_strategy:
            return STRATEGIES + (UNSAFE_STRATEGY,)
        return STRATEGIES

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> Settings:
        """Build the settings from environment variables named like the fields, upper-cased.

        ``overrides`` (field name -> value) win over the environment; the tests use them.
        """
        environ = os.environ if environ is None else environ
        parsers = {
            "lock_ttl_ms": _positive_int,
            "lock_wait_ms": _non_negative_int,
            "redis_timeout_ms": _positive_int,
            "redis_max_connections": _positive_int,
            "idempotency_ttl_s": _positive_int,
            "critical_section_delay_ms": _non_negative_int,
            "enable_unsafe_strategy": _flag,
            "lock_renewal": _flag,
            "lock_waiters": _lock_waiters,
            "disable_fencing": _flag,
            "redis_cluster": _flag,
            "redis_sentinels": _sentinels,
            "redis_sentinel_master": _name,
            "redis_wait_replicas": _non_negative_int,
            # WAIT's timeout 0 would block until enough replicas answer: never 0.
            "redis_wait_timeout_ms": _positive_int,
            "redis_password": str,
            "admin_token": str.strip,
            "log_format": _log_format,
            "metrics_enabled": _flag,
            "redis_client_name": _client_name,
        }
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = environ.get(setting.name.upper())
            if raw is None:
                continue
            try:
                values[setting.name] = parsers.get(setting.name, str.strip)(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.name.upper()}: {exc}") from exc
        values.update(overrides)
        if not values.get("replica_id"):
            values["replica_id"] = socket.gethostname()
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        """The rules on the final values (environment, overrides or the host name alike)."""
        if self.order_strategy not in STRATEGIES:
            raise ConfigError(
                f"ORDER_STRATEGY must be one of {', '.join(STRATEGIES)}, "
                f"got {self.order_strategy!r}"
            )
        if not SKU_PATTERN.fullmatch(self.default_sku):
            # Else every body-less POST /orders would be refused (422) at run time.
            raise ConfigError(f"DEFAULT_SKU: {SKU_RULE}; got {self.default_sku!r}")
        if not REPLICA_ID_PATTERN.fullmatch(self.replica_id):
            raise ConfigError(
                "REPLICA_ID: expected 1-253 printable ASCII characters, without spaces or "
                f"'/', got {self.replica_id!r}"
            )
        if self.redis_wait_replicas and 2 * self.redis_wait_timeout_ms > self.redis_timeout_ms:
            raise ConfigError(
                f"REDIS_WAIT_TIMEOUT_MS: at most half of REDIS_TIMEOUT_MS "
                f"({self.redis_timeout_ms}): the WAIT and the command before it share one "
                f"round trip, or a WAIT that runs out looks like a lost connection; "
                f"got {self.redis_wait_timeout_ms}")
        if self.redis_wait_replicas and self.lock_ttl_ms < 3 * self.redis_wait_timeout_ms:
            raise ConfigError(
                f"LOCK_TTL_MS: at least 3 x REDIS_WAIT_TIMEOUT_MS "
                f"({3 * self.redis_wait_timeout_ms}): a lease must outlast the WAITs of its "
                f"acquire and commit; got {self.lock_ttl_ms}")
        if self.redis_sentinels and self.redis_cluster:
            raise ConfigError("REDIS_SENTINELS and REDIS_CLUSTER=1 exclude each other: a Redis "
                              "Cluster promotes its replicas itself")
        if self.lock_ttl_ms < MIN_LOCK_TTL_MS:
            raise ConfigError(
                f"LOCK_TTL_MS: expected at least {MIN_LOCK_TTL_MS} (the lease is renewed every "
                f"LOCK_TTL_MS / 3), got {self.lock_ttl_ms}"
            )
