"""Bad input: a clear 4xx problem+json answer for each rule, and nothing changes in Redis."""

from __future__ import annotations

import pytest

PROBLEM = "application/problem+json"
JSON = "application/json"


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    problem = response.get_json()
    assert problem["status"] == status
    assert problem["type"] and problem["title"] and problem["detail"]
    assert response.headers["X-Replica"] == "test-replica"


@pytest.fixture
def stocked(client, books):
    """Stock 5 of 'default' and 'sku1'; after the test, assert no order was taken."""
    for sku in ("default", "sku1"):
        client.put(f"/stock/{sku}", json={"quantity": 5})
    yield client
    for sku in ("default", "sku1"):
        state = books(sku)
        assert (state.stock, state.sold, state.orders) == (5, 0, [])


ORDER_CASES = [
    # (query, raw body, content type, headers, status)
    ("", b"{", JSON, {}, 400),
    ("", b'{"sku": "sku1",}', JSON, {}, 400),
    ("", b'{"sku": "\xff"}', JSON, {}, 400),
    ("", b"[" * 10000, JSON, {}, 400),
    ("?strategy=fast", b"", None, {}, 400),
    ("?strategy=", b"", None, {}, 400),
    ("?strategy=none", b"", None, {}, 400),  # the unsafe control is off by default
    ("", b"", None, {"Idempotency-Key": ""}, 400),
    ("", b"", None, {"Idempotency-Key": "k" * 129}, 400),
    ("", b"", None, {"Idempotency-Key": "tab\there"}, 400),
    ("", b"[]", JSON, {}, 422),
    ("", b"null", JSON, {}, 422),
    ("", b'"sku1"', JSON, {}, 422),
    ("", b'{"sku": "sku1", "qty": 1}', JSON, {}, 422),
    ("", b'{"sku": ""}', JSON, {}, 422),
    ("", b'{"sku": "' + b"a" * 65 + b'"}', JSON, {}, 422),
    ("", b'{"sku": "has space"}', JSON, {}, 422),
    ("", b'{"sku": "{tag}"}', JSON, {}, 422),
    ("", b'{"sku": "a/b"}', JSON, {}, 422),
    ("", b'{"sku": 12}', JSON, {}, 422),
    ("", b'{"sku": null}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": 0}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": -1}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": 1001}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": true}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": 1.0}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": "1"}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": null}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": 1e400}', JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": NaN}', JSON, {}, 400),
    ("", b'{"sku": "sku1", "quantity": -Infinity}', JSON, {}, 400),
    ("", b'{"sku": "sku1", "quantity": 1' + b"0" * 5000 + b"}", JSON, {}, 422),
    ("", b'{"sku": "sku1", "quantity": 1' + b"0" * 30 + b"}", JSON, {}, 422),
    ("", b'{"sku": "sku1"}', "text/plain", {}, 415),
    ("", b'{"sku": "sku1"}', "application/x-www-form-urlencoded", {}, 415),
    ("", b'{"sku": "sku1"}', None, {}, 415),
    ("", b'{"sku": "' + b"a" * (17 * 1024) + b'"}', JSON, {}, 413),
]


@pytest.mark.parametrize("query,body,content_type,headers,status", ORDER_CASES)
def test_bad_order_is_refused_and_changes_nothing(stocked, query, body, content_type, headers,
                                                  status):
    response = stocked.post(f"/orders{query}", data=body, content_type=content_type,
                            headers=headers)
    assert_problem(response, status)


@pytest.mark.parametrize("sku,body,status", [
    ("sku1", b'{"quantity": -1}', 422),
    ("sku1", b'{"quantity": "5"}', 422),
    ("sku1", b'{"quantity": 5.5}', 422),
    ("sku1", b'{"quantity": 1000000001}', 422),
    ("sku1", b"{}", 422),
    ("sku1", b"", 422),
    ("sku1", b'{"quantity": 5, "sold": 0}', 422),
    ("sku1", b'{"quantity": 5, "per_customer_limit": 0}', 422),
    ("sku1", b'{"per_customer_limit": "1"}', 422),
    ("sku1", b"{nope", 400),
    ("b@d", b'{"quantity": 5}', 422),
    ("a" * 65, b'{"quantity": 5}', 422),
])
def test_bad_stock_change_is_refused_and_changes_nothing(stocked, sku, body, status):
    assert_problem(stocked.put(f"/stock/{sku}", data=body, content_type=JSON), status)


SETTLE_CASES = [
    # (raw body, content type, query, status)
    (b"{", JSON, "", 400),
    (b"[]", JSON, "", 422),
    (b'{"status": "confirmed"}', JSON, "", 422),
    (b"{}", "text/plain", "", 415),
    (b"{}", JSON, "?strategy=fast", 400),
    (b'{"a": "' + b"a" * (17 * 1024) + b'"}', JSON, "", 413),
]


@pytest.mark.parametrize("action", ["confirm", "cancel"])
@pytest.mark.parametrize("body,content_type,query,status", SETTLE_CASES)
def test_bad_confirm_or_cancel_is_refused_and_changes_nothing(client, books, action, body,
                                                              content_type, query, status):
    client.put("/stock/sku1", json={"quantity": 5})
    held = client.post("/orders", json={"sku": "sku1", "hold_s": 60}).get_json()["order_id"]
    assert_problem(client.post(f"/orders/{held}/{action}{query}", data=body,
                               content_type=content_type), status)
    state = books("sku1")
    assert (state.stock, state.reserved, state.sold) == (4, 1, 0)
    assert client.get(f"/orders/{held}").get_json()["status"] == "reserved"


def test_bad_sku_on_read_is_refused(client):
    assert_problem(client.get("/stock/b@d"), 422)


def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.get("/nothing-here"), 404)
    response = client.delete("/orders")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_unsafe_strategy_only_when_enabled(make_app, books):
    client = make_app(enable_unsafe_strategy=True).test_client()
    client.put("/stock/sku1", json={"quantity": 1})
    response = client.post("/orders?strategy=none", json={"sku": "sku1"})
    assert response.status_code == 201 and response.get_json()["strategy"] == "none"


def test_a_strategy_is_refused_in_the_words_it_was_sent(client):
    """The order endpoint reads the query string as Flask does for every other route: an
    invalid percent-escape is named as it was sent, not replaced."""
    for path in ("/orders", "/orders/x~00000000000000000000/confirm"):
        answer = client.post(f"{path}?strategy=lua%FF&strategy=lock")
        assert_problem(answer, 400)
        assert "'lua%FF'" in answer.get_json()["detail"]


def test_an_answer_that_fails_is_still_a_problem(client, monkeypatch, caplog):
    """Should answering a failure fail too, the order endpoint still answers a 500 problem
    with its headers, and logs it (as Flask does for the other routes)."""
    import service.orders_endpoint

    def broken(exc):
        raise TypeError("cannot answer")

    monkeypatch.setattr(service.orders_endpoint, "response_for", broken)
    answer = client.post("/orders", json=[], headers={"X-Request-ID": "r-9"})
    assert_problem(answer, 500)
    assert answer.headers["X-Request-ID"] == "r-9"
    assert "the answer to InvalidOrder failed" in caplog.text
