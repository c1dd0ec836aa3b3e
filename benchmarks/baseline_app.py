"""The hand-written peer: the order endpoint a user would write in ten lines, for the
``baseline`` scenario. One EVALSHA that takes one unit if there is one; no validation, no
idempotency, no order record, no log line, no metrics.

Run from the repository root: ``gunicorn 'benchmarks.baseline_app:app'`` (REDIS_URL).
"""

import os

import redis
from flask import Flask, jsonify, request

client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
take_one = client.register_script(
    "local left = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if left > 0 then return redis.call('DECR', KEYS[1]) end return -1")
app = Flask(__name__)


@app.post("/orders")
def order():
    left = take_one(keys=["{" + request.get_json()["sku"] + "}:stock"])
    return (jsonify(stock_left=left), 201) if left >= 0 else (jsonify(error="sold out"), 409)


@app.get("/readyz")
def ready():  # so the local launcher can wait for it as it waits for the service
    return jsonify(status="ready")
