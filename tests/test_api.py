"""The HTTP contract on one app: orders, stock, order records, health, idempotency."""

from __future__ import annotations

import logging

import pytest
from flask import request, request_started

from service.keys import SkuKeys

from .backends import BACKENDS

# The whole API, idempotency included, on one redis-server and on a 3-master Redis Cluster.
pytestmark = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)

PROBLEM = "application/problem+json"


def test_no_body_orders_one_of_the_default_sku(client, books):
    client.put("/stock/default", json={"quantity": 2})
    response = client.post("/orders")
    assert response.status_code == 201
    body = response.get_json()
    assert body["sku"] == "default" and body["quantity"] == 1 and body["stock_left"] == 1
    assert body["strategy"] == "lua" and body["replica"] == "test-replica"
    assert response.headers["Location"] == f"/orders/{body['order_id']}"
    assert response.headers["X-Replica"] == "test-replica"
    assert books("default").stock == 1


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_order_is_recorded_and_readable(client, books, strategy):
    client.put("/stock/shoe-42", json={"quantity": 5})
    response = client.post(f"/orders?strategy={strategy}", json={"sku": "shoe-42", "quantity": 3})
    assert response.status_code == 201
    created = response.get_json()
    assert created["stock_left"] == 2 and created["strategy"] == strategy

    order = client.get(response.headers["Location"])
    assert order.status_code == 200
    record = order.get_json()
    assert record["order_id"] == created["order_id"]
    assert (record["sku"], record["quantity"], record["strategy"]) == ("shoe-42", 3, strategy)
    assert record["replica"] == "test-replica" and record["created_at"].endswith("+00:00")
    assert record["status"] == "confirmed" and record["expires_at"] is None
    assert record["customer_id"] is None
    assert client.get("/stock/shoe-42").get_json() == {
        "sku": "shoe-42", "stock": 2, "reserved": 0, "sold": 3, "per_customer_limit": None}
    books("shoe-42").assert_never_oversold()


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_out_of_stock_changes_nothing(client, books, strategy):
    client.put("/stock/hat", json={"quantity": 2})
    response = client.post(f"/orders?strategy={strategy}", json={"sku": "hat", "quantity": 3})
    assert response.status_code == 409
    assert response.content_type == PROBLEM
    problem = response.get_json()
    assert problem["sku"] == "hat" and problem["stock_left"] == 2 and problem["status"] == 409
    state = books("hat")
    assert (state.stock, state.sold, state.orders) == (2, 0, [])


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_unknown_sku_is_out_of_stock(client, strategy):
    response = client.post(f"/orders?strategy={strategy}", json={"sku": "never-stocked"})
    assert response.status_code == 409
    assert response.get_json()["stock_left"] == 0


def test_configured_strategy_is_the_default(make_app):
    client = make_app(order_strategy="lock").test_client()
    client.put("/stock/default", json={"quantity": 1})
    assert client.post("/orders").get_json()["strategy"] == "lock"


def test_put_stock_keeps_the_books_balanced(client, books):
    assert client.put("/stock/cap", json={"quantity": 5}).get_json() == {
        "sku": "cap", "stock": 5, "reserved": 0, "sold": 0, "per_customer_limit": None}
    client.post("/orders", json={"sku": "cap", "quantity": 2})
    client.put("/stock/cap", json={"quantity": 10})
    client.put("/stock/cap", json={"quantity": 0})
    state = books("cap")
    assert (state.stock, state.sold) == (0, 2)
    state.assert_never_oversold()


def test_unknown_order_is_404(client):
    for order_id in ["default~0123456789abcdef0123", "nonsense", "a~b"]:
        response = client.get(f"/orders/{order_id}")
        assert response.status_code == 404 and response.content_type == PROBLEM


def test_an_order_is_answered_before_flask(make_app):
    """POST /orders skips Flask's per-request machinery (orders_endpoint.py), with the same
    headers as every other answer; every other request still goes through Flask."""
    app = make_app()
    client = app.test_client()
    seen = []
    with request_started.connected_to(lambda sender, **extra: seen.append(request.path), app):
        client.put("/stock/fast", json={"quantity": 1})
        created = client.post("/orders", json={"sku": "fast"}, headers={"X-Request-ID": "r-1"})
        sold_out = client.post("/orders?strategy=lock", json={"sku": "fast"})
        assert client.delete("/orders").status_code == 405
    assert seen == ["/stock/fast", "/orders"]  # the PUT and the DELETE only
    assert created.status_code == 201 and sold_out.status_code == 409
    assert created.headers["X-Request-ID"] == "r-1"
    assert len(sold_out.headers["X-Request-ID"]) == 32
    assert {created.headers["X-Replica"], sold_out.headers["X-Replica"]} == {"test-replica"}


def test_health(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_every_order_logs_the_original_line(client, caplog):
    client.put("/stock/log", json={"quantity": 1})
    with caplog.at_level(logging.INFO, logger="service.orders"):
        order_id = client.post("/orders", json={"sku": "log"}).get_json()["order_id"]
        client.post("/orders", json={"sku": "log"})
    created, out = [r.getMessage() for r in caplog.records]
    assert "Order created successfully, Stock left 0" in created
    assert f"order_id={order_id}" in created and "replica=test-replica" in created
    assert "strategy=lua" in created and "sku=log" in created
    assert "Out of stock, Stock left 0" in out


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_idempotency_key_replays_the_first_answer(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 3})
    send = lambda body: client.post(  # noqa: E731
        f"/orders?strategy={strategy}", json=body, headers={"Idempotency-Key": "order-77"})
    first, again = send({"sku": "mug"}), send({"sku": "mug"})
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert books("mug").sold == 1

    reused = send({"sku": "mug", "quantity": 2})
    assert reused.status_code == 422 and reused.content_type == PROBLEM
    assert books("mug").sold == 1  # the same key with another SKU: see test_idempotency.py


def test_without_a_key_a_retry_orders_twice(client, books):
    """The control for the test above: the same retry, no key, is a second order."""
    client.put("/stock/mug", json={"quantity": 3})
    client.post("/orders", json={"sku": "mug"})
    client.post("/orders", json={"sku": "mug"})
    with pytest.raises(AssertionError):
        assert books("mug").sold == 1


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_idempotency_key_replays_out_of_stock(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 0})
    headers = {"Idempotency-Key": "late"}
    first = client.post(f"/orders?strategy={strategy}", json={"sku": "mug"}, headers=headers)
    client.put("/stock/mug", json={"quantity": 5})
    again = client.post(f"/orders?strategy={strategy}", json={"sku": "mug"}, headers=headers)
    assert first.status_code == again.status_code == 409
    assert again.headers["Idempotent-Replayed"] == "true"
    assert books("mug").stock == 5


def test_idempotency_key_is_shared_by_the_strategies(client, books):
    client.put("/stock/mug", json={"quantity": 3})
    headers = {"Idempotency-Key": "k"}
    first = client.post("/orders?strategy=lua", json={"sku": "mug"}, headers=headers)
    again = client.post("/orders?strategy=lock", json={"sku": "mug"}, headers=headers)
    assert again.get_json() == first.get_json()
    assert books("mug").sold == 1


def test_idempotency_record_expires(make_app, redis_client):
    client = make_app(idempotency_ttl_s=60).test_client()
    client.put("/stock/mug", json={"quantity": 3})
    client.post("/orders", json={"sku": "mug"}, headers={"Idempotency-Key": "k"})
    assert 0 < redis_client.ttl(SkuKeys("mug").idempotency("k")) <= 60
