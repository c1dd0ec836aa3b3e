"""An unreachable or silent Redis gets a prompt 503 with Retry-After; recovery needs no restart."""

from __future__ import annotations

import socket
import time

import pytest

from harness.redis_server import RedisServer, free_port
from service import create_app

PROBLEM = "application/problem+json"


def app_for(url, **overrides):
    return create_app({"redis_url": url, "replica_id": "r", "redis_timeout_ms": 200,
                       **overrides}).test_client()


def assert_unavailable(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_redis_down_answers_503_then_recovers(tmp_path, strategy):
    port = free_port()
    client = app_for(f"redis://127.0.0.1:{port}/0", order_strategy=strategy)

    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert_unavailable(client.put("/stock/s", json={"quantity": 1}))
    assert_unavailable(client.get("/stock/s"))
    assert_unavailable(client.get("/orders/s~0123456789abcdef0123"))
    assert_unavailable(client.get("/readyz"))
    assert client.get("/livez").status_code == 200

    with RedisServer(port=port, directory=str(tmp_path)):
        assert client.get("/readyz").status_code == 200
        assert client.put("/stock/s", json={"quantity": 1}).status_code == 200
        assert client.post("/orders", json={"sku": "s"}).status_code == 201


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_silent_redis_times_out_into_503(silent_server, strategy):
    client = app_for(silent_server, order_strategy=strategy)
    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert_unavailable(client.get("/readyz"))


def test_scripts_reload_after_a_script_flush(client, redis_client):
    client.put("/stock/s", json={"quantity": 2})
    assert client.post("/orders", json={"sku": "s"}).status_code == 201
    redis_client.script_flush()
    assert client.post("/orders", json={"sku": "s"}).status_code == 201
    assert client.post("/orders?strategy=lock", json={"sku": "s"}).status_code == 409


def test_lock_strategy_fails_at_once_not_after_the_lock_wait():
    """Redis refusing connections: the lock strategy answers 503 without waiting LOCK_WAIT_MS
    (a caller not yet queued for the lock has nothing to wait for)."""
    client = app_for(f"redis://127.0.0.1:{free_port()}/0", order_strategy="lock",
                     lock_wait_ms=10_000)
    started = time.monotonic()
    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert time.monotonic() - started < 2.0
