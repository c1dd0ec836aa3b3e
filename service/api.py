"""HTTP only: parse and validate requests, call the domain, shape the replies.

Every route but ``POST /orders``, which ``orders_endpoint.py`` answers before Flask.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from . import inputs
from .config import Settings
from .errors import Forbidden, InvalidOrder, Unauthorized, Unavailable, domain_slug
from .model import UNCHANGED, DomainError, StockLevels
from .orders import OrderService
from .telemetry import report_settle

bp = Blueprint("api", __name__)


def _service() -> OrderService:
    return current_app.extensions["order_service"]


def _settings() -> Settings:
    return current_app.extensions["settings"]


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    """``body`` as compact JSON: what jsonify does, without its per-call provider lookups."""
    return Response(json.dumps(body, separators=(",", ":")), status,
                    mimetype="application/json")


def _json_body() -> dict[str, Any] | None:
    """The body as a JSON object; None when there is no body."""
    return inputs.json_object(inputs.read_body(request.stream.read, request.content_length),
                              request.content_type)


def _strategy(settings: Settings) -> str:
    if not request.query_string:  # no query string to parse
        return settings.order_strategy
    return inputs.strategy(request.args.get("strategy"), settings)


@bp.before_app_request
def assign_request_id() -> None:
    """The client's X-Request-ID if it is usable, else a new one; echoed on the response."""
    g.request_id = inputs.request_id(request.headers.get("X-Request-ID"))


def _require_admin() -> None:
    """With ADMIN_TOKEN set: 401 without a bearer token, 403 with a wrong one."""
    expected = _settings().admin_token
    if not expected:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("This operation needs Authorization: Bearer <ADMIN_TOKEN>")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Forbidden("The bearer token is not the admin token")


@bp.post("/orders")
def place_order() -> Response:
    """Never reached: ``orders_endpoint.OrdersEndpoint`` answers ``POST /orders`` before
    Flask (see create_app). The rule is here for the route table: Flask answers the other
    methods on /orders with a 405 that names POST, and openapi.json is checked against it."""
    raise RuntimeError("POST /orders is answered by service.orders_endpoint, not by Flask")


@bp.get("/orders/<order_id>")
def get_order(order_id: str) -> Response:
    return _json_response(_service().order(order_id).as_json())


@bp.post("/orders/<order_id>/confirm")
def confirm_order(order_id: str) -> Response:
    return _settle(order_id, "confirm")


@bp.post("/orders/<order_id>/cancel")
def cancel_order(order_id: str) -> Response:
    return _settle(order_id, "cancel")


def _settle(order_id: str, action: str) -> Response:
    """Confirm or cancel: no body (or an empty JSON object); log and count it whatever its
    end."""
    strategy = _strategy(_settings())
    inputs.only_fields(_json_body() or {}, ())
    started = time.perf_counter()
    result = "unavailable"
    try:
        settled = _service().settle(order_id, action, strategy)
        result = "settled" if settled.changed else "unchanged"
    except DomainError as exc:
        result = domain_slug(exc)
        raise
    finally:
        report_settle(order_id, action, strategy, result, time.perf_counter() - started,
                      g.request_id)
    return _json_response(settled.order.as_json())


def _stock_json(levels: StockLevels) -> Response:
    return _json_response(asdict(levels))


@bp.put("/stock/<sku>")
def set_stock(sku: str) -> Response:
    _require_admin()
    sku = inputs.valid_sku(sku)
    body = _json_body() or {}
    inputs.only_fields(body, ("quantity", "per_customer_limit"))
    if "quantity" not in body and "per_customer_limit" not in body:
        raise InvalidOrder("quantity or per_customer_limit is required")
    quantity = inputs.valid_int(body, "quantity", 0, inputs.MAX_STOCK) if "quantity" in body \
        else None
    limit: int | None | type[UNCHANGED] = UNCHANGED
    if body.get("per_customer_limit", 0) is None:
        limit = None
    elif "per_customer_limit" in body:
        limit = inputs.valid_int(body, "per_customer_limit", 1, inputs.MAX_LIMIT)
    return _stock_json(_service().set_stock(sku, quantity, limit))


@bp.get("/stock/<sku>")
def get_stock(sku: str) -> Response:
    return _stock_json(_service().stock(inputs.valid_sku(sku)))


@bp.get("/livez")
def livez() -> Response:
    return _json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    failure = _service().redis_failure()
    if failure is not None:
        raise Unavailable(f"Redis did not answer PING: {failure}")
    return _json_response({"status": "ready"})


@bp.after_app_request
def tag_replica(response: Response) -> Response:
    response.headers["X-Replica"] = _settings().replica_id
    response.headers["X-Request-ID"] = g.get("request_id") or inputs.request_id(None)
    return response
