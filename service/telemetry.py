"""What every order leaves behind: one log line (human or JSON), and its metrics.

``report_order`` is called once per order request that got as far as the domain, whatever
its end, from the HTTP layer that knows the request id and the latency. How an order ended is
its ``result``: "created", "out-of-stock", or the problem slug it failed with (the ``outcome``
label of the metrics and field of the log line).
"""

from __future__ import annotations

import logging

from . import metrics
from .model import OrderRequest, Outcome

log = logging.getLogger("service.orders")


def result_of(outcome: Outcome) -> str:
    """The result of an order that reached an outcome (created or not)."""
    return "created" if outcome.created else "out-of-stock"


def report_order(request: OrderRequest, result: str, latency_s: float, request_id: str,
                 outcome: Outcome | None = None) -> None:
    """Log and count one order: its ``result`` (see above), and its ``outcome`` if it
    reached one."""
    metrics.order_finished(request.strategy, result, latency_s)
    latency_ms = round(latency_s * 1000, 2)
    fields = {
        "replica": request.replica, "strategy": request.strategy, "sku": request.sku,
        "quantity": request.quantity, "order_id": outcome.order_id if outcome else None,
        "outcome": result, "replayed": bool(outcome and outcome.replayed),
        "stock_left": outcome.stock_left if outcome else None,
        "latency_ms": latency_ms, "request_id": request_id,
    }
    if outcome is not None:
        message = "Order created successfully" if outcome.created else "Out of stock"
        log.info(
            "replica=%s strategy=%s sku=%s order_id=%s replayed=%s %s, Stock left %d "
            "(request_id=%s latency_ms=%.2f)",
            request.replica, request.strategy, request.sku, outcome.order_id or "-",
            str(outcome.replayed).lower(), message, outcome.stock_left, request_id, latency_ms,
            extra={"fields": fields},
        )
    else:
        log.warning(
            "replica=%s strategy=%s sku=%s Order failed: %s (request_id=%s latency_ms=%.2f)",
            request.replica, request.strategy, request.sku, result, request_id, latency_ms,
            extra={"fields": fields},
        )
