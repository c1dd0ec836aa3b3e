"""Prometheus metrics: what the service counts, and ``GET /metrics``.

Under gunicorn every worker is a process of its own, so the metrics live in prometheus_client's
multiprocess mode: each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn.conf.py sees that it is set before any worker starts), and a scrape, whichever
worker answers it, adds up the files of every worker, the dead ones' included, so a counter
never goes back when a worker is replaced. Without that variable (the Flask test client, a
bare ``flask run``) the values are this process's own.

Recording is switched on by ``init_app`` when METRICS_ENABLED is on (the default). The switch
is per process, as the metrics are: with it off, the hot path records nothing (one test of a
module flag) and there is no ``/metrics`` route (404). It exists to measure what the metrics
cost (``python -m benchmarks --scenario metrics``).

``GET /metrics?sku=A&sku=B`` adds the current stock and sold count of those SKUs, read from
Redis at that scrape (nothing about SKUs is kept in the process: their number is unbounded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily

from .errors import REDIS_ERRORS, MalformedRequest
from .keys import SKU_PATTERN, SKU_RULE

if TYPE_CHECKING:
    from .config import Settings
    from .orders import OrderService

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
REDIS_ERROR_COUNT = Counter(
    "order_redis_errors", "Requests answered 503 because Redis failed, by exception class",
    ["error"])

RENEWAL_RESULTS = ("renewed", "lost", "error")
MAX_SCRAPED_SKUS = 50

# --- Recording (the hot path) ----------------------------------------------------------------

_enabled = False  # set by init_app; nothing is recorded before, e.g. by the lock benchmark
_failure_logged = False
_order_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def configure(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def _failed(what: str) -> None:
    """A metric that cannot be written (say, its file's volume is full) must not fail the
    order it describes, nor stop the lease watchdog: log it, once per process."""
    global _failure_logged
    if not _failure_logged:
        _failure_logged = True
        log.exception("metrics: %s not recorded (further failures are not logged)", what)


def order_finished(strategy: str, outcome: str, latency_s: float) -> None:
    if not _enabled:
        return
    try:
        series = _order_series.get((strategy, outcome))
        if series is None:  # labels() validates and locks: look each pair up once
            series = ORDERS.labels(strategy, outcome), ORDER_LATENCY.labels(strategy)
            _order_series[(strategy, outcome)] = series
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


# --- GET /metrics ----------------------------------------------------------------------------

bp = Blueprint("metrics", __name__)


def init_app(app: Flask, settings: Settings) -> None:
    """Record (or not) per ``settings.metrics_enabled``; serve /metrics only when on."""
    configure(settings.metrics_enabled)
    if settings.metrics_enabled:
        # Every label value that can occur, at zero, so a rate() has a series from the start.
        for result in RENEWAL_RESULTS:
            LEASE_RENEWALS.labels(result)
        app.register_blueprint(bp)


def _process_registry() -> CollectorRegistry:
    """Every worker's metrics in multiprocess mode (as prometheus_client chose at import),
    else this process's."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def _requested_skus() -> list[str]:
    skus = list(dict.fromkeys(request.args.getlist("sku")))
    if len(skus) > MAX_SCRAPED_SKUS:
        raise MalformedRequest(f"At most {MAX_SCRAPED_SKUS} sku parameters, got {len(skus)}")
    bad = [sku for sku in skus if not SKU_PATTERN.fullmatch(sku)]
    if bad:
        raise MalformedRequest(f"{SKU_RULE}, got {bad[0]!r}")
    return skus


class _StockCollector:
    """``order_stock`` and ``order_sold`` of the SKUs asked for, read now; with them
    ``order_stock_read_success``, 0 when Redis did not answer (the stock series are then
    missing, and the rest of the scrape still answers)."""

    def __init__(self, service: OrderService, skus: list[str]) -> None:
        self.readings: dict[str, tuple[int, int]] = {}
        self.ok = True
        try:
            for sku in skus:
                self.readings[sku] = service.stock(sku)
        except REDIS_ERRORS as exc:
            log.warning("metrics: stock not read from Redis: %s: %s", type(exc).__name__, exc)
            self.readings, self.ok = {}, False

    def collect(self):
        stock = GaugeMetricFamily("order_stock", "Units available now, read from Redis at "
                                  "this scrape (GET /metrics?sku=...)", labels=["sku"])
        sold = GaugeMetricFamily("order_sold", "Units sold so far (sum of the recorded orders' "
                                 "quantities), read from Redis at this scrape", labels=["sku"])
        for sku, (available, total_sold) in self.readings.items():
            stock.add_metric([sku], available)
            sold.add_metric([sku], total_sold)
        yield stock
        yield sold
        yield GaugeMetricFamily("order_stock_read_success", "1 if the SKUs' stock was read "
                                "from Redis at this scrape, 0 if Redis did not answer",
                                value=1 if self.ok else 0)


@bp.get("/metrics")
def scrape() -> Response:
    skus = _requested_skus()
    body = generate_latest(_process_registry())
    if skus:
        registry = CollectorRegistry()
        registry.register(_StockCollector(current_app.extensions["order_service"], skus))
        body += generate_latest(registry)
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)
