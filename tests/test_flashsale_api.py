"""The flash-sale contract through the API, one app on every backend: per-customer limits,
reservations that are confirmed, cancelled or expire, and the books after each step.

The races (many replicas, both strategies, the unsafe control failing first) are in
test_flashsale.py.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from .backends import BACKENDS

pytestmark = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)
STRATEGIES = pytest.mark.parametrize("strategy", ["lua", "lock"])
PROBLEM = "application/problem+json"


def slug(response) -> str:
    return response.get_json()["type"].rsplit("/", 1)[-1]


def order(client, strategy, sku, **fields):
    return client.post(f"/orders?strategy={strategy}", json={"sku": sku, **fields})


def settle(client, strategy, order_id, action):
    return client.post(f"/orders/{order_id}/{action}?strategy={strategy}")


def stock(client, sku):
    return client.get(f"/stock/{sku}").get_json()


@STRATEGIES
def test_a_customer_gets_no_more_than_the_limit(client, books, strategy):
    assert client.put("/stock/tee", json={"quantity": 10, "per_customer_limit": 2}).get_json() \
        == {"sku": "tee", "stock": 10, "reserved": 0, "sold": 0, "per_customer_limit": 2}
    assert order(client, strategy, "tee", customer_id="ann").status_code == 201
    assert order(client, strategy, "tee", customer_id="ann", hold_s=60).status_code == 201
    refused = order(client, strategy, "tee", customer_id="ann")
    assert refused.status_code == 409 and refused.content_type == PROBLEM
    assert slug(refused) == "customer-limit"
    assert order(client, strategy, "tee", customer_id="bob", quantity=3).status_code == 409
    assert order(client, strategy, "tee", customer_id="bob", quantity=2).status_code == 201
    state = books("tee")
    assert (state.stock, state.reserved, state.sold) == (6, 1, 3)
    assert state.customer_counts == {"ann": 2, "bob": 2}
    state.assert_never_oversold()
    state.assert_within_limit(2)


@STRATEGIES
def test_a_limited_sku_needs_a_customer_id(client, books, strategy):
    client.put("/stock/cap", json={"quantity": 3, "per_customer_limit": 1})
    response = order(client, strategy, "cap")
    assert response.status_code == 422 and slug(response) == "customer-required"
    assert (books("cap").stock, books("cap").orders) == (3, [])


@STRATEGIES
def test_cancelled_and_expired_units_do_not_count_against_the_limit(client, strategy):
    client.put("/stock/sock", json={"quantity": 5, "per_customer_limit": 1})
    held = order(client, strategy, "sock", customer_id="cy", hold_s=60).get_json()
    assert settle(client, strategy, held["order_id"], "cancel").status_code == 200
    held = order(client, strategy, "sock", customer_id="cy", hold_s=1).get_json()
    assert order(client, strategy, "sock", customer_id="cy").status_code == 409
    time.sleep(1.1)
    assert order(client, strategy, "sock", customer_id="cy").status_code == 201


def test_the_limit_is_set_left_and_removed(client):
    assert stock(client, "hat")["per_customer_limit"] is None
    client.put("/stock/hat", json={"quantity": 4, "per_customer_limit": 3})
    client.put("/stock/hat", json={"quantity": 5})  # absent: left as it is
    assert stock(client, "hat") == {"sku": "hat", "stock": 5, "reserved": 0, "sold": 0,
                                     "per_customer_limit": 3}
    client.put("/stock/hat", json={"per_customer_limit": 1})  # quantity absent: left too
    assert (stock(client, "hat")["stock"], stock(client, "hat")["per_customer_limit"]) == (5, 1)
    client.put("/stock/hat", json={"per_customer_limit": None})
    assert stock(client, "hat")["per_customer_limit"] is None


@pytest.mark.parametrize("body", [
    {}, {"per_customer_limit": 0}, {"per_customer_limit": 1001}, {"per_customer_limit": "2"},
    {"per_customer_limit": True}, {"per_customer_limit": 1.5}, {"quantity": 1, "limit": 2},
])
def test_a_bad_limit_is_refused_and_changes_nothing(client, body):
    client.put("/stock/hat", json={"quantity": 4, "per_customer_limit": 3})
    response = client.put("/stock/hat", json=body)
    assert response.status_code == 422 and response.content_type == PROBLEM
    assert stock(client, "hat")["per_customer_limit"] == 3


@pytest.mark.parametrize("fields", [
    {"customer_id": ""}, {"customer_id": "x" * 65}, {"customer_id": "a b"},
    {"customer_id": 7}, {"customer_id": None}, {"hold_s": 0}, {"hold_s": 3601},
    {"hold_s": "60"}, {"hold_s": True}, {"hold_s": None},
])
def test_bad_order_fields_are_refused_and_change_nothing(client, books, fields):
    client.put("/stock/hat", json={"quantity": 4})
    response = order(client, "lua", "hat", **fields)
    assert response.status_code == 422 and response.content_type == PROBLEM
    assert (books("hat").stock, books("hat").orders) == (4, [])


@STRATEGIES
def test_a_reservation_is_confirmed_once(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 3})
    created = order(client, strategy, "mug", customer_id="ann", hold_s=60)
    body = created.get_json()
    assert created.status_code == 201 and body["status"] == "reserved"
    assert body["customer_id"] == "ann" and body["stock_left"] == 2
    deadline = datetime.fromisoformat(body["expires_at"])
    assert deadline.utcoffset().total_seconds() == 0
    assert client.get(f"/orders/{body['order_id']}").get_json()["status"] == "reserved"
    assert stock(client, "mug") == {"sku": "mug", "stock": 2, "reserved": 1, "sold": 0,
                                     "per_customer_limit": None}
    books("mug").assert_never_oversold()

    for _ in range(2):  # the second confirm answers the same and changes nothing
        confirmed = settle(client, strategy, body["order_id"], "confirm")
        assert confirmed.status_code == 200
        assert confirmed.get_json()["status"] == "confirmed"
        assert (stock(client, "mug")["reserved"], stock(client, "mug")["sold"]) == (0, 1)
        books("mug").assert_never_oversold()
    refused = settle(client, strategy, body["order_id"], "cancel")
    assert refused.status_code == 409 and slug(refused) == "order-state-conflict"
    assert refused.get_json()["order_status"] == "confirmed"
    assert stock(client, "mug")["stock"] == 2


@STRATEGIES
def test_a_cancelled_reservation_puts_its_units_back(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 3})
    held = order(client, strategy, "mug", quantity=2, hold_s=60).get_json()
    for _ in range(2):
        cancelled = settle(client, strategy, held["order_id"], "cancel")
        assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
        assert stock(client, "mug") == {"sku": "mug", "stock": 3, "reserved": 0, "sold": 0,
                                         "per_customer_limit": None}
        books("mug").assert_never_oversold()
    refused = settle(client, strategy, held["order_id"], "confirm")
    assert refused.status_code == 409 and refused.get_json()["order_status"] == "cancelled"


@STRATEGIES
def test_an_unpaid_reservation_expires_and_its_units_go_back_on_sale(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 2})
    held = order(client, strategy, "mug", quantity=2, hold_s=1).get_json()
    assert order(client, strategy, "mug").status_code == 409
    time.sleep(1.1)
    # Nobody read the order: the stock read counts the due hold as back already.
    assert stock(client, "mug") == {"sku": "mug", "stock": 2, "reserved": 0, "sold": 0,
                                     "per_customer_limit": None}
    assert client.get(f"/orders/{held['order_id']}").get_json()["status"] == "expired"
    assert order(client, strategy, "mug").status_code == 201  # sold again
    books("mug").assert_never_oversold()
    for action in ("confirm", "cancel"):
        refused = settle(client, strategy, held["order_id"], action)
        assert refused.status_code == 409 and refused.get_json()["order_status"] == "expired"
    state = books("mug")
    assert (state.stock, state.reserved, state.sold) == (1, 0, 1)
    state.assert_never_oversold()


@STRATEGIES
def test_settling_an_unknown_order_is_404(client, strategy):
    for order_id in ["mug~0123456789abcdef0123", "nonsense"]:
        for action in ("confirm", "cancel"):
            response = settle(client, strategy, order_id, action)
            assert response.status_code == 404 and response.content_type == PROBLEM


def test_a_settle_takes_no_body_fields(client):
    client.put("/stock/mug", json={"quantity": 1})
    held = order(client, "lua", "mug", hold_s=60).get_json()
    response = client.post(f"/orders/{held['order_id']}/confirm", json={"pay": 1})
    assert response.status_code == 422
    assert client.post(f"/orders/{held['order_id']}/confirm", json={}).status_code == 200


@STRATEGIES
def test_a_retried_reservation_replays_its_answer(client, books, strategy):
    client.put("/stock/mug", json={"quantity": 3, "per_customer_limit": 2})
    answers = [client.post(f"/orders?strategy={strategy}", headers={"Idempotency-Key": "r1"},
                           json={"sku": "mug", "customer_id": "ann", "hold_s": 60})
               for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201]
    first, second = (a.get_json() for a in answers)
    assert first == second and first["status"] == "reserved"
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    reused = client.post(f"/orders?strategy={strategy}", headers={"Idempotency-Key": "r1"},
                         json={"sku": "mug", "customer_id": "ann", "hold_s": 30})
    assert reused.status_code == 422
    assert books("mug").reserved == 1


@pytest.mark.parametrize("action", ["confirm", "cancel"])
def test_a_lock_settle_written_after_the_deadline_finds_the_order_expired(make_app, books,
                                                                           action):
    """The holder reads the order before its deadline and writes after it (here a pause of
    1.1 s between read and write): the write expires the hold instead."""
    client = make_app(enable_unsafe_strategy=True, critical_section_delay_ms=1100).test_client()
    client.put("/stock/mug", json={"quantity": 1})
    held = order(client, "lua", "mug", hold_s=1).get_json()
    response = settle(client, "lock", held["order_id"], action)
    assert response.status_code == 409 and response.get_json()["order_status"] == "expired"
    assert client.get(f"/orders/{held['order_id']}").get_json()["status"] == "expired"
    state = books("mug")
    assert (state.stock, state.reserved, state.sold) == (1, 0, 0)
    state.assert_never_oversold()
