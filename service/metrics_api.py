"""``GET /metrics``: every worker's metrics (``service/metrics.py`` records them), and with
``?sku=A&sku=B`` the current stock and sold count of those SKUs, read from Redis at that scrape
(nothing about SKUs is kept in the process: their number is unbounded). Registered by
``create_app`` only when METRICS_ENABLED is on; off, ``/metrics`` answers 404.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily

from .errors import MalformedRequest
from .keys import SKU_PATTERN, SKU_RULE
from .model import StockLevels
from .redis_client import REDIS_ERRORS

if TYPE_CHECKING:
    from .orders import OrderService

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)
MAX_SCRAPED_SKUS = 50


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
    """``order_stock``, ``order_reserved`` and ``order_sold`` of the SKUs asked for, read now;
    with them
    ``order_stock_read_success``, 0 when Redis did not answer (the stock series are then
    missing, and the rest of the scrape still answers)."""

    def __init__(self, service: OrderService, skus: list[str]) -> None:
        self.readings: dict[str, StockLevels] = {}
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
        reserved = GaugeMetricFamily("order_reserved", "Units held by live reservations, read "
                                     "from Redis at this scrape", labels=["sku"])
        sold = GaugeMetricFamily("order_sold", "Units sold so far (sum of the confirmed "
                                 "orders' quantities), read from Redis at this scrape",
                                 labels=["sku"])
        for sku, levels in self.readings.items():
            stock.add_metric([sku], levels.stock)
            reserved.add_metric([sku], levels.reserved)
            sold.add_metric([sku], levels.sold)
        yield stock
        yield reserved
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
