"""The order service: a Flask app that takes orders against Redis stock without overselling."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from . import api, errors, logs, metrics, openapi
from .config import Settings
from .orders import OrderService
from .redis_client import connect

log = logging.getLogger("service")


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
