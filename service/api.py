"""HTTP only: parse and validate requests, call the domain, shape the replies."""

from __future__ import annotations

import hmac
import json
import os
import re
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from .config import Settings
from .errors import (
    CustomerLimit,
    Forbidden,
    InvalidOrder,
    MalformedRequest,
    OutOfStock,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    domain_slug,
)
from .keys import CUSTOMER_ID_PATTERN, CUSTOMER_ID_RULE, SKU_PATTERN, SKU_RULE
from .model import CUSTOMER_LIMIT, UNCHANGED, DomainError, OrderRequest, Outcome, StockLevels
from .orders import OrderService
from .redis_client import REDIS_ERRORS
from .telemetry import report_order, report_settle

bp = Blueprint("api", __name__)

MAX_BODY_BYTES = 16 * 1024
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,128}")
REQUEST_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
MAX_QUANTITY = 1000
MAX_STOCK = 1_000_000_000  # Lua numbers are doubles: stay far below 2**53
MAX_LIMIT = 1000  # per customer
MAX_HOLD_S = 3600


def _service() -> OrderService:
    return current_app.extensions["order_service"]


def _settings() -> Settings:
    return current_app.extensions["settings"]


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    """``body`` as compact JSON: what jsonify does, without its per-call provider lookups."""
    return Response(json.dumps(body, separators=(",", ":")), status,
                    mimetype="application/json")


class _HugeInteger:
    """Stands for a JSON integer too long for Python to parse: valid JSON, out of every range."""


def _parse_int(digits: str) -> int | _HugeInteger:
    return int(digits) if len(digits) <= 30 else _HugeInteger()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _read_body() -> bytes:
    """At most MAX_BODY_BYTES of body, with a declared length or chunked; more is a 413.

    A body that cannot be read as it is framed (a broken chunk, or fewer bytes than its
    Content-Length before the client stopped sending) is a 400: none of it is used.
    """
    too_large = PayloadTooLarge(f"The body must be at most {MAX_BODY_BYTES} bytes")
    declared = request.content_length
    if (declared or 0) > MAX_BODY_BYTES:
        raise too_large
    # A declared length is read to its end and no further (one read, usually); a chunked
    # body, in short reads until it ends or passes the limit.
    wanted = MAX_BODY_BYTES + 1 if declared is None else declared
    data = bytearray()
    while len(data) < wanted:
        piece = _read_some(wanted - len(data))
        if not piece:
            break
        data += piece
    if declared is not None and len(data) < declared:
        # gunicorn hands over a short body as if it were whole: a truncated
        # '{"sku": "a", "quantity": 10}' could still parse as another valid order.
        raise MalformedRequest(f"The body ended after {len(data)} of its {declared} bytes")
    if len(data) > MAX_BODY_BYTES:
        raise too_large
    return bytes(data)


def _read_some(size: int) -> bytes:
    """Up to ``size`` bytes of the body; a body the server cannot unframe is a 400."""
    try:
        return request.stream.read(size)
    except ClientDisconnected:
        raise MalformedRequest("The body ended before its framing said it would") from None
    except HTTPException:  # werkzeug's own limit (413): answered as it is
        raise
    except Exception as exc:
        # The WSGI server's body reader failed: gunicorn raises InvalidChunkSize,
        # ChunkMissingTerminator, InvalidChunkExtension (no common base with anything the
        # service knows) or NoMoreData. All mean the client framed the body wrong, so a 400,
        # not a 500 with a traceback per request. The server itself then closes the
        # connection: where the next request would start is unknown.
        raise MalformedRequest(f"The body's framing is broken: {str(exc)[:200]}") from None


def _json_body() -> dict[str, Any] | None:
    """The body as a JSON object; None when there is no body."""
    data = _read_body()
    if not data:
        return None
    if not request.is_json:
        raise UnsupportedMediaType(f"Got Content-Type {request.content_type or 'none'!r}")
    try:
        body = json.loads(data, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidOrder(f"The body must be a JSON object, got {type(body).__name__}")
    return body


def _only_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidOrder(f"Unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def _valid_sku(sku: Any) -> str:
    if not isinstance(sku, str) or not SKU_PATTERN.fullmatch(sku):
        raise InvalidOrder(SKU_RULE)
    return sku


def _valid_int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if type(value) is not int or not low <= value <= high:  # bool is an int subclass: refused
        raise InvalidOrder(f"{name} must be an integer from {low} to {high}")
    return value


def _strategy(settings: Settings) -> str:
    if not request.query_string:  # the usual order: no query string to parse
        return settings.order_strategy
    strategy = request.args.get("strategy", settings.order_strategy)
    if strategy not in settings.allowed_strategies():
        raise MalformedRequest(
            f"Unknown strategy {strategy!r}; use one of {', '.join(settings.allowed_strategies())}"
        )
    return strategy


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise MalformedRequest("Idempotency-Key must be 1-128 printable ASCII characters")
    return key


def _valid_customer(body: dict[str, Any]) -> str | None:
    if "customer_id" not in body:
        return None
    customer = body["customer_id"]
    if not isinstance(customer, str) or not CUSTOMER_ID_PATTERN.fullmatch(customer):
        raise InvalidOrder(CUSTOMER_ID_RULE)
    return customer


def _order_request() -> OrderRequest:
    settings = _settings()
    strategy = _strategy(settings)
    key = _idempotency_key()
    body = _json_body() or {}
    _only_fields(body, ("sku", "quantity", "customer_id", "hold_s"))
    sku = _valid_sku(body.get("sku", settings.default_sku))
    quantity = _valid_int({"quantity": 1, **body}, "quantity", 1, MAX_QUANTITY)
    hold_s = _valid_int(body, "hold_s", 1, MAX_HOLD_S) if "hold_s" in body else None
    return OrderRequest(sku, quantity, strategy, settings.replica_id, key,
                        _valid_customer(body), hold_s)


def _replay_headers(outcome: Outcome) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if outcome.replayed else {}


@bp.before_app_request
def assign_request_id() -> None:
    """The client's X-Request-ID if it is usable, else a new one; echoed on the response."""
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID_PATTERN.fullmatch(given) else _new_request_id()


def _new_request_id() -> str:
    return os.urandom(16).hex()  # 32 hex digits, as a uuid4's hex: a quarter of its cost


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


def _place(order_request: OrderRequest) -> Outcome:
    """Place the order, and log (and count) it whatever its end."""
    started = time.perf_counter()
    try:
        outcome = _service().place_order(order_request)
    except DomainError as exc:
        report_order(order_request, domain_slug(exc), time.perf_counter() - started,
                     g.request_id)
        raise
    except REDIS_ERRORS:
        report_order(order_request, Unavailable.slug, time.perf_counter() - started,
                     g.request_id)
        raise
    report_order(order_request, outcome.result, time.perf_counter() - started,
                 g.request_id, outcome)
    return outcome


@bp.post("/orders")
def place_order() -> Response:
    outcome = _place(_order_request())
    if not outcome.created:
        problem = CustomerLimit if outcome.result == CUSTOMER_LIMIT else OutOfStock
        detail = (f"customer {outcome.customer_id} cannot take {outcome.quantity} more of "
                  f"{outcome.sku}" if problem is CustomerLimit else
                  f"{outcome.stock_left} left of {outcome.sku}, {outcome.quantity} asked")
        raise problem(detail, headers=_replay_headers(outcome), sku=outcome.sku,
                      stock_left=outcome.stock_left)
    response = _json_response({
        "order_id": outcome.order_id, "sku": outcome.sku, "quantity": outcome.quantity,
        "stock_left": outcome.stock_left, "strategy": outcome.strategy,
        "replica": outcome.replica, "status": outcome.status,
        "expires_at": outcome.expires_at, "customer_id": outcome.customer_id,
    }, 201)
    response.headers["Location"] = f"/orders/{outcome.order_id}"
    response.headers.update(_replay_headers(outcome))
    return response


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
    _only_fields(_json_body() or {}, ())
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
    sku = _valid_sku(sku)
    body = _json_body() or {}
    _only_fields(body, ("quantity", "per_customer_limit"))
    if "quantity" not in body and "per_customer_limit" not in body:
        raise InvalidOrder("quantity or per_customer_limit is required")
    quantity = _valid_int(body, "quantity", 0, MAX_STOCK) if "quantity" in body else None
    limit: int | None | type[UNCHANGED] = UNCHANGED
    if body.get("per_customer_limit", 0) is None:
        limit = None
    elif "per_customer_limit" in body:
        limit = _valid_int(body, "per_customer_limit", 1, MAX_LIMIT)
    return _stock_json(_service().set_stock(sku, quantity, limit))


@bp.get("/stock/<sku>")
def get_stock(sku: str) -> Response:
    return _stock_json(_service().stock(_valid_sku(sku)))


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
    response.headers["X-Request-ID"] = g.get("request_id") or _new_request_id()
    return response
