"""Problem details (RFC 9457): the one place that turns failures into HTTP statuses.

The HTTP layer raises the ``Problem`` subclasses below (a request it refuses); the domain
raises the exceptions of ``service/model.py``, which carry no status: ``DOMAIN_PROBLEMS`` is
the table that gives each its status, type and title. redis-py's errors are a 503.
``register`` installs the handlers that answer each with ``application/problem+json`` in
Flask; ``response_for`` gives the same answer to code that answers without Flask.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import metrics
from .model import (
    CustomerRequired,
    DomainError,
    IdempotencyKeyReused,
    LockLost,
    LockTimeout,
    OrderNotFound,
    OrderStateConflict,
    OutcomeUnknown,
)
from .redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_S = 1


class Problem(Exception):
    """A failure the client is told about: status, a stable type slug, a title, a detail."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(
        self, detail: str, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        self.extra_headers = headers or {}

    def headers(self) -> dict[str, str]:
        return self.extra_headers


class MalformedRequest(Problem):
    status, slug, title = 400, "malformed-request", "Malformed request"


class InvalidOrder(Problem):
    status, slug, title = 422, "invalid-request", "The request breaks a rule"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Body too large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Body must be application/json"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authorization required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="order-service"', **self.extra_headers}


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Wrong credentials"


class OutOfStock(Problem):
    status, slug, title = 409, "out-of-stock", "Out of stock"


class CustomerLimit(Problem):
    status, slug, title = 409, "customer-limit", "Over the per-customer limit"


class Unavailable(Problem):
    """Try again: Redis or the lock was not there in time (a retry with the same
    Idempotency-Key is always safe)."""

    status, slug, title = 503, "unavailable", "Try again shortly"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S), **self.extra_headers}


# The one table of the domain's exceptions: status, problem type (slug) and title. A 503
# carries Retry-After, as every Unavailable does.
DOMAIN_PROBLEMS: dict[type[DomainError], tuple[int, str, str]] = {
    IdempotencyKeyReused: (422, "idempotency-key-reused",
                           "Idempotency-Key used for another request"),
    OrderNotFound: (404, "order-not-found", "No such order"),
    CustomerRequired: (422, "customer-required",
                       "This SKU has a per-customer limit: customer_id is required"),
    OrderStateConflict: (409, "order-state-conflict",
                         "The order's state does not allow this"),
    LockTimeout: (503, "lock-timeout", "The SKU's lock was not acquired in time"),
    LockLost: (503, "lock-lost", "The lock was lost before the order was written"),
    OutcomeUnknown: (503, "outcome-unknown",
                     "Not confirmed by enough Redis replicas: the outcome is unknown"),
}


def domain_slug(exc: DomainError) -> str:
    """The problem type a domain exception is answered with (logs and metrics name it)."""
    return DOMAIN_PROBLEMS[type(exc)][1]


def problem_response(
    status: int, slug: str, title: str, detail: str, **extensions: Any
) -> Response:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    body.update(extensions)
    # default=str: an extension value JSON has no type for (a date, say) is sent as text,
    # as Flask's own JSON provider would, rather than failing the answer.
    return Response(json.dumps(body, separators=(",", ":"), default=str), status=status,
                    mimetype=PROBLEM_JSON)


def _from_problem(exc: Problem) -> Response:
    response = problem_response(exc.status, exc.slug, exc.title, exc.detail, **exc.extensions)
    response.headers.update(exc.headers())
    return response


def _from_domain_error(exc: DomainError) -> Response:
    status, slug, title = DOMAIN_PROBLEMS[type(exc)]
    response = problem_response(status, slug, title, exc.detail, **exc.extensions)
    if status == Unavailable.status:  # as every Unavailable: try again shortly
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _from_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):  # a chunked body over the limit: ours, too
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        return _from_problem(PayloadTooLarge(f"The body must be at most {limit} bytes"))
    slug = (exc.name or "error").lower().replace(" ", "-")
    response = problem_response(exc.code or 500, slug, exc.name, exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _from_redis_error(exc: Exception) -> Response:
    metrics.redis_error(exc)
    log.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
    return _from_problem(Unavailable(f"Redis did not answer in time ({type(exc).__name__})"))


def _from_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(500, "internal-error", "Internal error", "An unexpected error")


# What answers each kind of failure, the more particular first.
HANDLERS = (
    ((Problem,), _from_problem),
    ((DomainError,), _from_domain_error),
    ((HTTPException,), _from_http_exception),
    (REDIS_ERRORS, _from_redis_error),
    ((Exception,), _from_unexpected),
)


def register(app: Flask) -> None:
    for kinds, handler in HANDLERS:
        for kind in kinds:
            app.register_error_handler(kind, handler)


def response_for(exc: Exception) -> Response:
    """The answer to ``exc`` that ``register``'s handlers give in Flask."""
    return next(handler(exc) for kinds, handler in HANDLERS if isinstance(exc, kinds))
