"""The fault scenarios' invariant checker and settings it relies on: it must catch what it
claims to catch, so each test builds a case where an invariant is broken."""

from __future__ import annotations

import pytest

from harness.books import assert_safe, tally
from harness.customers import Attempt, Customer
from service.config import ConfigError, Settings
from service.keys import SkuKeys
from service.lock import held_by, holder_token


def answer(status, order_id=None, problem=""):
    return Attempt("http://replica", status, problem, order_id, 0.0, 0.001)


def customer(number, *answers, key=True):
    return Customer(number, f"k{number}" if key else None, list(answers))


@pytest.fixture
def shop(client):
    """A SKU with 3 in stock and one order placed through the service."""
    client.put("/stock/inv", json={"quantity": 3})
    placed = client.post("/orders", json={"sku": "inv"}).get_json()["order_id"]
    return placed


def test_a_consistent_run_holds(shop, redis_client):
    customers = [customer(0, answer(503, problem="/problems/unavailable"), answer(201, shop)),
                 customer(1, answer(409, problem="/problems/out-of-stock"))]
    result = tally(redis_client, "inv", customers)
    assert (result.acknowledged, result.refused, result.recorded, result.resolved) == (1, 1, 1, 1)
    assert_safe(result)


@pytest.mark.parametrize(("customers", "broken"), [
    ([customer(0, answer(201, "inv~00000000000000000000")), customer(1)], "lost"),
    ([customer(0, answer(409, problem="/problems/out-of-stock"))], "phantom"),
    ([customer(0, answer(0, problem="ClientTimeout"))], "unresolved"),
    ([customer(0, answer(201, "x")), customer(1, answer(0), answer(201, "y"), key=False)],
     "unresolved"),
    ([customer(0, answer(422, problem="/problems/invalid-request"))], "unexpected answers 422"),
])
def test_each_broken_invariant_is_caught(shop, redis_client, customers, broken):
    for c in customers[1:]:
        c.attempts = c.attempts or [answer(201, shop)]
    with pytest.raises(AssertionError, match=broken):
        assert_safe(tally(redis_client, "inv", customers))


def test_stock_that_vanishes_or_appears_is_caught(shop, redis_client):
    customers = [customer(0, answer(201, shop))]
    stock = SkuKeys("inv").stock
    redis_client.decr(stock)  # gone without a sale
    with pytest.raises(AssertionError, match="missing"):
        assert_safe(tally(redis_client, "inv", customers))
    redis_client.incrby(stock, 2)  # one more than was ever supplied
    with pytest.raises(AssertionError, match="oversold"):
        assert_safe(tally(redis_client, "inv", customers))


def test_lock_tokens_name_their_holder():
    token = holder_token("replica-1")
    assert held_by(token, "replica-1")
    assert not held_by(token, "replica-10") and not held_by(None, "replica-1")
    assert holder_token("replica-1") != token


def test_redis_client_name_is_optional_and_checked(make_app, redis_client):
    app = make_app(redis_client_name="replica-7")
    assert app.test_client().get("/readyz").status_code == 200
    assert "replica-7" in {c["name"] for c in redis_client.client_list()}
    with pytest.raises(ConfigError, match="REDIS_CLIENT_NAME"):
        Settings.from_env({"REDIS_CLIENT_NAME": "has space"})
