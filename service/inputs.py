"""What a client sends, read and checked without Flask: a body within its limit, a JSON
object, each header and field by its rule, and an order request made of them.

Both ways into the service use these (``api.py``'s Flask routes, and ``orders_endpoint.py``,
which answers ``POST /orders`` before Flask), so a request is refused the same way whichever
of them answers it. Each check raises one of ``errors.py``'s problems.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.http import parse_options_header

from .config import Settings
from .errors import InvalidOrder, MalformedRequest, PayloadTooLarge, UnsupportedMediaType
from .keys import CUSTOMER_ID_PATTERN, CUSTOMER_ID_RULE, SKU_PATTERN, SKU_RULE
from .model import OrderRequest

MAX_BODY_BYTES = 16 * 1024
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,128}")
REQUEST_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
MAX_QUANTITY = 1000
MAX_STOCK = 1_000_000_000  # Lua numbers are doubles: stay far below 2**53
MAX_LIMIT = 1000  # per customer
MAX_HOLD_S = 3600
ORDER_FIELDS = ("sku", "quantity", "customer_id", "hold_s")


def read_body(read: Callable[[int], bytes], declared: int | None) -> bytes:
    """At most MAX_BODY_BYTES of body, read with ``read(size)``: ``declared`` bytes (its
    Content-Length), or with None (chunked) until it ends; more is a 413.

    A body that cannot be read as it is framed (a broken chunk, or fewer bytes than its
    Content-Length before the client stopped sending) is a 400: none of it is used.
    """
    if (declared or 0) > MAX_BODY_BYTES:
        raise _too_large()
    # A declared length is read to its end and no further (one read, usually); a chunked
    # body, in short reads until it ends or passes the limit.
    wanted = MAX_BODY_BYTES + 1 if declared is None else declared
    data = b""
    while len(data) < wanted:
        piece = _read_some(read, wanted - len(data))
        if not piece:
            break
        data += piece
    if declared is not None and len(data) < declared:
        # gunicorn hands over a short body as if it were whole: a truncated
        # '{"sku": "a", "quantity": 10}' could still parse as another valid order.
        raise MalformedRequest(f"The body ended after {len(data)} of its {declared} bytes")
    if len(data) > MAX_BODY_BYTES:
        raise _too_large()
    return data


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The body must be at most {MAX_BODY_BYTES} bytes")


def _read_some(read: Callable[[int], bytes], size: int) -> bytes:
    """Up to ``size`` bytes of the body; a body the server cannot unframe is a 400."""
    try:
        return read(size)
    except ClientDisconnected:  # werkzeug's stream (api.py): fewer bytes than declared
        raise MalformedRequest("The body ended before its framing said it would") from None
    except HTTPException:  # werkzeug's own limit (413, api.py): answered as it is
        raise
    except Exception as exc:
        # The WSGI server's body reader failed: gunicorn raises InvalidChunkSize,
        # ChunkMissingTerminator, InvalidChunkExtension (no common base with anything the
        # service knows) or NoMoreData. All mean the client framed the body wrong, so a 400,
        # not a 500 with a traceback per request. The server itself then closes the
        # connection: where the next request would start is unknown.
        raise MalformedRequest(f"The body's framing is broken: {str(exc)[:200]}") from None


class _HugeInteger:
    """Stands for a JSON integer too long for Python to parse: valid JSON, out of every range."""


def _parse_int(digits: str) -> int | _HugeInteger:
    return int(digits) if len(digits) <= 30 else _HugeInteger()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def is_json(content_type: str | None) -> bool:
    """As werkzeug's ``Request.is_json``: application/json, or application/<anything>+json."""
    if content_type == "application/json":  # the usual order: no header to parse
        return True
    mimetype = parse_options_header(content_type or "")[0].lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json"))


def json_object(data: bytes, content_type: str | None) -> dict[str, Any] | None:
    """The body ``data`` as a JSON object; None when there is no body."""
    if not data:
        return None
    if not is_json(content_type):
        raise UnsupportedMediaType(f"Got Content-Type {content_type or 'none'!r}")
    try:
        body = json.loads(data, parse_int=_parse_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidOrder(f"The body must be a JSON object, got {type(body).__name__}")
    return body


def only_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [name for name in body if name not in allowed]
    if unknown:
        raise InvalidOrder(f"Unknown field(s) {', '.join(sorted(unknown))}; "
                           f"allowed: {', '.join(allowed)}")


def valid_sku(sku: Any) -> str:
    if not isinstance(sku, str) or not SKU_PATTERN.fullmatch(sku):
        raise InvalidOrder(SKU_RULE)
    return sku


def valid_int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if type(value) is not int or not low <= value <= high:  # bool is an int subclass: refused
        raise InvalidOrder(f"{name} must be an integer from {low} to {high}")
    return value


def valid_customer(body: dict[str, Any]) -> str | None:
    if "customer_id" not in body:
        return None
    customer = body["customer_id"]
    if not isinstance(customer, str) or not CUSTOMER_ID_PATTERN.fullmatch(customer):
        raise InvalidOrder(CUSTOMER_ID_RULE)
    return customer


def strategy(asked: str | None, settings: Settings) -> str:
    """The strategy a ``?strategy=`` query parameter asks for (None: none asked)."""
    if asked is None:
        return settings.order_strategy
    if asked not in settings.allowed_strategies():
        raise MalformedRequest(
            f"Unknown strategy {asked!r}; use one of {', '.join(settings.allowed_strategies())}"
        )
    return asked


def idempotency_key(given: str | None) -> str | None:
    """The Idempotency-Key header's value (None: no header)."""
    if given is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(given):
        raise MalformedRequest("Idempotency-Key must be 1-128 printable ASCII characters")
    return given


def request_id(given: str | None) -> str:
    """The client's X-Request-ID if it is usable, else a new one."""
    if given and REQUEST_ID_PATTERN.fullmatch(given):
        return given
    return os.urandom(16).hex()  # 32 hex digits, as a uuid4's hex: a quarter of its cost


def order_request(body: dict[str, Any] | None, asked_strategy: str,
                  key: str | None, settings: Settings) -> OrderRequest:
    """The order a checked body asks for (None: no body, so the default SKU)."""
    body = body or {}
    only_fields(body, ORDER_FIELDS)
    sku = valid_sku(body.get("sku", settings.default_sku))
    quantity = valid_int(body, "quantity", 1, MAX_QUANTITY) if "quantity" in body else 1
    hold_s = valid_int(body, "hold_s", 1, MAX_HOLD_S) if "hold_s" in body else None
    return OrderRequest(sku, quantity, asked_strategy, settings.replica_id, key,
                        valid_customer(body), hold_s)
