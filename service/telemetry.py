"""What every order, confirm and cancel leaves behind: one log line (human or JSON), and its
metrics.

``report_order`` is called once per order request that got as far as the domain, whatever
its end, from the HTTP layer that knows the request id and the latency. How an order ended is
its ``result``: "created", "out-of-stock", "customer-limit", or the problem slug it failed
with (the ``outcome`` label of the metrics and field of the log line). ``report_settle`` does
the same for a confirm or cancel: "settled", "unchanged" (it was already), or a problem slug.
"""

from __future__ import annotations

import logging

from . import metrics
from .model import OrderRequest, Outcome
from .records import RESERVED

log = logging.getLogger("service.orders")

MESSAGES = {"created": "Order created successfully", "out-of-stock": "Out of stock",
            "customer-limit": "Over the customer's limit"}


def report_order(request: OrderRequest, result: str, latency_s: float, request_id: str,
                 outcome: Outcome | None = None) -> None:
    """Log and count one order: its ``result`` (see above), and its ``outcome`` if it
    reached one."""
    metrics.order_finished(request.strategy, result, latency_s)
    if outcome is not None and outcome.created and outcome.status == RESERVED \
            and not outcome.replayed:
        metrics.reservation("made")
    latency_ms = round(latency_s * 1000, 2)
    fields = {
        "replica": request.replica, "strategy": request.strategy, "sku": request.sku,
        "quantity": request.quantity, "order_id": outcome.order_id if outcome else None,
        "outcome": result, "replayed": bool(outcome and outcome.replayed),
        "stock_left": outcome.stock_left if outcome else None,
        "latency_ms": latency_ms, "request_id": request_id,
    }
    if outcome is not None:
        message = MESSAGES[outcome.result]
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


def report_settle(order_id: str, action: str, strategy: str, result: str, latency_s: float,
                  request_id: str) -> None:
    """Log and count one confirm or cancel (``action``) of ``order_id``: its ``result``."""
    if result == "settled":
        metrics.reservation("confirmed" if action == "confirm" else "cancelled")
    latency_ms = round(latency_s * 1000, 2)
    fields = {"strategy": strategy, "order_id": order_id, "action": action, "outcome": result,
              "latency_ms": latency_ms, "request_id": request_id}
    log.log(logging.INFO if result in ("settled", "unchanged") else logging.WARNING,
            "strategy=%s order_id=%s %s: %s (request_id=%s latency_ms=%.2f)",
            strategy, order_id, action, result, request_id, latency_ms,
            extra={"fields": fields})
