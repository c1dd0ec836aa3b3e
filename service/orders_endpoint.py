"""``POST /orders`` as a plain WSGI app, in front of the Flask app.

An order is the request a flash sale sends thousands of times a second, and Flask's
per-request machinery (its request and app contexts, werkzeug's request and response objects,
the app's hooks and signals) cost about a third of an order's CPU under gunicorn
(docs/benchmark/hot-path.md). So ``create_app`` puts this endpoint before Flask. It answers
every POST to ``/orders`` itself, as the rest of the API is answered: the same checks
(``inputs.py``), the same domain call, one log line and the metrics whatever the end
(``telemetry.py``), the same headers (X-Replica, X-Request-ID) and the same problem answers
(``errors.response_for``). Any other request goes on to Flask unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler
from werkzeug.sansio.utils import get_content_length
from werkzeug.wrappers import Response

from . import inputs
from .config import Settings
from .errors import (
    CustomerLimit,
    OutOfStock,
    Problem,
    Unavailable,
    domain_slug,
    problem_response,
    response_for,
)
from .model import CUSTOMER_LIMIT, DomainError, OrderRequest, Outcome
from .orders import OrderService
from .redis_client import REDIS_ERRORS
from .telemetry import report_order

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

log = logging.getLogger(__name__)

PATH = "/orders"
STATUS_CREATED = "201 Created"


class OrdersEndpoint:
    """Answers ``POST /orders``; hands every other request to ``next_app`` (the Flask app)."""

    def __init__(self, next_app: WSGIApp, settings: Settings, service: OrderService) -> None:
        self.next_app = next_app
        self.settings = settings
        self.service = service

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.next_app(environ, start_response)
        request_id = inputs.request_id(environ.get("HTTP_X_REQUEST_ID"))
        try:
            outcome = self._place(self._order_request(environ), request_id)
            if not outcome.created:
                raise _not_created(outcome)
        except Exception as exc:  # every failure is answered as Flask's handlers answer it
            response = _answer_to(exc)
            response.headers["X-Replica"] = self.settings.replica_id
            response.headers["X-Request-ID"] = request_id
            return response(environ, start_response)
        body = json.dumps({
            "order_id": outcome.order_id, "sku": outcome.sku, "quantity": outcome.quantity,
            "stock_left": outcome.stock_left, "strategy": outcome.strategy,
            "replica": outcome.replica, "status": outcome.status,
            "expires_at": outcome.expires_at, "customer_id": outcome.customer_id,
        }, separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Location", f"{PATH}/{outcome.order_id}"),
                   ("X-Replica", self.settings.replica_id), ("X-Request-ID", request_id),
                   *_replay_headers(outcome).items()]
        start_response(STATUS_CREATED, headers)
        return [body]

    def _order_request(self, environ: dict[str, Any]) -> OrderRequest:
        """The order the request asks for, checked in the order the API documents: the
        query string, the Idempotency-Key, then the body."""
        query = environ.get("QUERY_STRING")
        asked = _first(query, "strategy") if query else None
        strategy = inputs.strategy(asked, self.settings)
        key = inputs.idempotency_key(environ.get("HTTP_IDEMPOTENCY_KEY"))
        declared = get_content_length(environ.get("CONTENT_LENGTH"),
                                      environ.get("HTTP_TRANSFER_ENCODING"))
        if declared is None and "wsgi.input_terminated" not in environ:
            data = b""  # a server that cannot tell where the body ends: none, as werkzeug reads it
        else:
            data = inputs.read_body(environ["wsgi.input"].read, declared)
        body = inputs.json_object(data, environ.get("CONTENT_TYPE"))
        return inputs.order_request(body, strategy, key, self.settings)

    def _place(self, order_request: OrderRequest, request_id: str) -> Outcome:
        """Place the order, and log (and count) it whatever its end."""
        started = time.perf_counter()
        try:
            outcome = self.service.place_order(order_request)
        except DomainError as exc:
            report_order(order_request, domain_slug(exc), time.perf_counter() - started,
                         request_id)
            raise
        except REDIS_ERRORS:
            report_order(order_request, Unavailable.slug, time.perf_counter() - started,
                         request_id)
            raise
        report_order(order_request, outcome.result, time.perf_counter() - started,
                     request_id, outcome)
        return outcome


def _first(query: str, name: str) -> str | None:
    """The first value of ``name`` in a WSGI query string, decoded as werkzeug's
    ``request.args`` decodes it (an invalid percent-escape stays as it was sent)."""
    decoded = query.encode("latin-1").decode("utf-8", "replace")
    return next((value for key, value in parse_qsl(decoded, keep_blank_values=True,
                                                    errors="werkzeug.url_quote")
                 if key == name), None)


def _answer_to(exc: Exception) -> Response:
    """``errors.response_for(exc)``; should that fail too, a plain 500 problem (as Flask
    falls back to its InternalServerError), logged with both tracebacks."""
    try:
        return response_for(exc)
    except Exception:
        log.exception("the answer to %s failed", type(exc).__name__)
        return problem_response(500, "internal-error", "Internal error", "An unexpected error")


def _replay_headers(outcome: Outcome) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if outcome.replayed else {}


def _not_created(outcome: Outcome) -> Problem:
    if outcome.result == CUSTOMER_LIMIT:
        detail = (f"customer {outcome.customer_id} cannot take {outcome.quantity} more of "
                  f"{outcome.sku}")
        problem: type[Problem] = CustomerLimit
    else:
        detail = f"{outcome.stock_left} left of {outcome.sku}, {outcome.quantity} asked"
        problem = OutOfStock
    return problem(detail, headers=_replay_headers(outcome), sku=outcome.sku,
                   stock_left=outcome.stock_left)
