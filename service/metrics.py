"""Prometheus metrics: what the service counts (the hot path). It imports nothing from the
service, so every module can record without an import cycle; ``GET /metrics`` is
``service/metrics_api.py``.

Under gunicorn every worker is a process of its own, so the metrics live in prometheus_client's
multiprocess mode: each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn.conf.py sees that it is set before any worker starts), and a scrape, whichever
worker answers it, adds up the files of every worker, the dead ones' included, so a counter
never goes back when a worker is replaced. Without that variable (the Flask test client, a
bare ``flask run``) the values are this process's own.

Recording is switched on by ``configure`` (``create_app`` calls it with METRICS_ENABLED, on by
default). The switch is per process, as the metrics are: with it off, the hot path records
nothing (one test of a module flag). It exists to measure what the metrics cost
(``python -m benchmarks --scenario metrics``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

# --- The metrics -----------------------------------------------------------------------------

# An order takes one Lua call (about a millisecond) or, contended, a few lock hand-offs; a
# request ends by LOCK_WAIT_MS (2 s) plus a Redis timeout at worst.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# An uncontended acquisition is one round trip (well under a millisecond on a LAN).
LOCK_WAIT_BUCKETS = (0.0005, *LATENCY_BUCKETS)

ORDERS = Counter(
    "orders", "Order requests that reached the domain, by strategy and outcome: created, "
    "out-of-stock, or the problem type they failed with (unavailable, lock-timeout, ...)",
    ["strategy", "outcome"])
ORDER_LATENCY = Histogram(
    "order_latency_seconds", "Time to place an order (domain call, whatever its outcome)",
    ["strategy"], buckets=LATENCY_BUCKETS)
LOCK_WAIT = Histogram(
    "order_lock_wait_seconds", "Time the lock strategy waited for a SKU's lock, acquired or "
    "not (LOCK_WAIT_MS at most)", buckets=LOCK_WAIT_BUCKETS)
LOCK_TIMEOUTS = Counter(
    "order_lock_timeouts", "Lock orders refused because the SKU's lock was busy for LOCK_WAIT_MS")
FENCING_REFUSALS = Counter(
    "order_fencing_refusals", "Lock orders whose write was refused by the fencing check: the "
    "lock had passed to another holder, or the stock changed, since their read")
LEASE_RENEWALS = Counter(
    "order_lease_renewals", "Lease renewals by the watchdog: renewed, lost (the lock was gone), "
    "error (Redis did not answer; retried)", ["result"])
RESERVATIONS = Counter(
    "order_reservations", "Reservations (orders placed with hold_s) by event: made, "
    "confirmed, cancelled, expired (counted when a script gives the units back to stock)",
    ["event"])
REDIS_ERROR_COUNT = Counter(
    "order_redis_errors", "Requests answered 503 because Redis failed, by exception class",
    ["error"])

RENEWAL_RESULTS = ("renewed", "lost", "error")
RESERVATION_EVENTS = ("made", "confirmed", "cancelled", "expired")

# --- Recording (the hot path) ----------------------------------------------------------------

_enabled = False  # set by init_app; nothing is recorded before, e.g. by the lock benchmark
_failure_logged = False
_order_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def configure(enabled: bool) -> None:
    global _enabled
    _enabled = enabled
    if enabled:  # every label value that can occur, at zero, so a rate() has a series at once
        for result in RENEWAL_RESULTS:
            LEASE_RENEWALS.labels(result)
        for event in RESERVATION_EVENTS:
            RESERVATIONS.labels(event)


def enabled() -> bool:
    return _enabled


def _failed(what: str) -> None:
    """A metric that cannot be written (say, its file's volume is full) must not fail the
    order it describes, nor stop the lease watchdog: log it, once per process."""
    global _failure_logged
    if not _failure_logged:
        _failure_logged = True
        log.exception("metrics: %s not recorded (further failures are not logged)", what)


def order_finished(strategy: str, result: str, latency_s: float) -> None:
    """Count an order by its ``result`` (its ``outcome`` label), and time it."""
    if not _enabled:
        return
    try:
        series = _order_series.get((strategy, result))
        if series is None:  # labels() validates and locks: look each pair up once
            series = ORDERS.labels(strategy, result), ORDER_LATENCY.labels(strategy)
            _order_series[(strategy, result)] = series
        count, latency = series
        count.inc()
        latency.observe(latency_s)
    except Exception:
        _failed("order")


def _record(what: str, write: Callable[..., None], *args: Any) -> None:
    try:
        write(*args)
    except Exception:
        _failed(what)


def lock_waited(seconds: float) -> None:
    if _enabled:
        _record("lock wait", LOCK_WAIT.observe, seconds)


def lock_timed_out() -> None:
    if _enabled:
        _record("lock timeout", LOCK_TIMEOUTS.inc)


def fencing_refused() -> None:
    if _enabled:
        _record("fencing refusal", FENCING_REFUSALS.inc)


def lease_renewal(result: str) -> None:
    if _enabled:
        _record("lease renewal", lambda: LEASE_RENEWALS.labels(result).inc())


def redis_error(exc: BaseException) -> None:
    if _enabled:
        _record("Redis error", lambda: REDIS_ERROR_COUNT.labels(type(exc).__name__).inc())


def reservation(event: str, count: int = 1) -> None:
    """Count reservations made, confirmed, cancelled or expired (RESERVATION_EVENTS)."""
    if _enabled and count:
        _record("reservation", lambda: RESERVATIONS.labels(event).inc(count))


def holds_expired(count: int) -> None:
    """A script expired ``count`` reservations (often 0: then nothing is recorded)."""
    if count:
        reservation("expired", int(count))
