"""The order service: a Flask app that takes orders against Redis stock without overselling."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import api, errors
from .config import Settings
from .orders import OrderService


def connect(settings: Settings) -> redis.Redis:
    """A Redis client whose every call gives up after REDIS_TIMEOUT_MS.

    No automatic retries: a retried EVALSHA whose first reply was lost could decrement twice.
    """
    timeout = settings.redis_timeout_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        client_name=settings.redis_client_name or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``test_config`` maps Settings field names to values that win over the env."""
    settings = Settings.from_env(**(test_config or {}))
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = api.MAX_BODY_BYTES
    app.extensions["order_service"] = OrderService(settings, connect(settings))
    errors.register(app)
    app.register_blueprint(api.bp)
    return app
