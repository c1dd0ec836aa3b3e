"""The order service: a Flask app that takes orders against Redis stock without overselling."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("service")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``test_config`` maps Settings field names to values that win over the env.

    ``app.extensions`` holds the app's ``settings`` and its ``order_service``.
    """
    # Imported here, as Flask's tutorial does: importing one module of the package (say
    # service.keys) loads neither Flask nor the rest of the service.
    from flask import Flask

    from . import api, errors, inputs, logs, metrics, metrics_api, openapi
    from .config import Settings
    from .orders import OrderService
    from .orders_endpoint import OrdersEndpoint
    from .redis_client import connect

    settings = Settings.from_env(**(test_config or {}))
    logs.configure(settings.log_format)
    if not settings.admin_token:
        log.warning("ADMIN_TOKEN is not set: anyone who reaches this service can change stock "
                    "(PUT /stock/<sku>)")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = inputs.MAX_BODY_BYTES
    app.extensions["settings"] = settings
    service = app.extensions["order_service"] = OrderService(settings, connect(settings))
    errors.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(openapi.bp)
    metrics.configure(settings.metrics_enabled)
    if settings.metrics_enabled:  # off only to measure their cost: then /metrics is a 404
        app.register_blueprint(metrics_api.bp)
    # POST /orders is answered before Flask (orders_endpoint.py); everything else by Flask.
    app.wsgi_app = OrdersEndpoint(app.wsgi_app, settings, service)
    return app
