"""The order service: a Flask app that takes orders against Redis stock without overselling."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import api, errors, logs, metrics, openapi
from .config import Settings
from .orders import OrderService

log = logging.getLogger("service")


def connect(settings: Settings) -> redis.Redis | redis.RedisCluster:
    """A Redis (or Redis Cluster) client whose every call gives up after REDIS_TIMEOUT_MS.

    No automatic retries: a retried EVALSHA whose first reply was lost could decrement twice.
    (A cluster client still follows MOVED and ASK redirects: those commands did not run.)
    """
    timeout = settings.redis_timeout_ms / 1000
    options: dict[str, Any] = {
        "decode_responses": True,
        "client_name": settings.redis_client_name or None,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_cluster:
        # Connects at once to learn the slot map: a cluster that cannot be reached stops the
        # start-up with RedisClusterException (gunicorn then exits; Kubernetes restarts it).
        return redis.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``test_config`` maps Settings field names to values that win over the env."""
    settings = Settings.from_env(**(test_config or {}))
    logs.configure(settings.log_format)
    if not settings.admin_token:
        log.warning("ADMIN_TOKEN is not set: anyone who reaches this service can change stock "
                    "(PUT /stock/<sku>)")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = api.MAX_BODY_BYTES
    app.extensions["order_service"] = OrderService(settings, connect(settings))
    errors.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    metrics.init_app(app, settings)
    return app
