"""REDIS_WAIT_REPLICAS through the HTTP API: a write fewer replicas confirmed than asked is a
503 ``outcome-unknown`` with Retry-After and, for an order, its id.

The Redis here has no replica at all, so every WAIT 1 runs out: each answer that depends on a
write says its outcome is unknown. With WAIT off, the same requests succeed (the control).
"""

from __future__ import annotations

import pytest

from .backends import BACKENDS

pytestmark = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)

WAIT = {"redis_wait_replicas": 1, "redis_wait_timeout_ms": 20}


def problem_type(response) -> str:
    return response.get_json()["type"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_an_unconfirmed_order_answers_outcome_unknown_with_its_id(make_app, redis_client,
                                                                  strategy):
    redis_client.set("{w}:stock", 5)  # no PUT /stock: it would wait for a replica too
    client = make_app(**WAIT).test_client()
    response = client.post(f"/orders?strategy={strategy}", json={"sku": "w"},
                           headers={"Idempotency-Key": f"k-{strategy}"})
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert problem_type(response) == "outcome-unknown"
    assert response.headers["Retry-After"]
    order_id = response.get_json()["order_id"]
    # The id is where the outcome is read. The lock gave its lock back before writing
    # anything: no such order. The lua order ran on the master, but no replica has it, so
    # even its read says it is unknown; read without WAIT, the master shows it.
    found = client.get(f"/orders/{order_id}")
    if strategy == "lock":
        assert found.status_code == 404
    else:
        assert found.status_code == 503 and problem_type(found) == "outcome-unknown"
        assert found.get_json()["order_id"] == order_id
        assert make_app().test_client().get(f"/orders/{order_id}").status_code == 200


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_without_wait_the_same_order_is_created(make_app, redis_client, strategy):
    redis_client.set("{w}:stock", 5)
    client = make_app(redis_wait_replicas=0).test_client()
    assert client.post(f"/orders?strategy={strategy}", json={"sku": "w"}).status_code == 201


def test_an_unconfirmed_stock_change_answers_outcome_unknown(make_app, redis_client):
    client = make_app(**WAIT).test_client()
    response = client.put("/stock/w", json={"quantity": 7})
    assert response.status_code == 503
    assert problem_type(response) == "outcome-unknown"
    assert "order_id" not in response.get_json()
    assert client.get("/stock/w").get_json()["stock"] == 7  # it ran; its replicas are missing


@pytest.mark.parametrize("action", ["confirm", "cancel"])
@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_an_unconfirmed_confirm_or_cancel_answers_outcome_unknown(make_app, redis_client,
                                                                 strategy, action):
    redis_client.set("{w}:stock", 5)
    held = make_app().test_client().post(f"/orders?strategy={strategy}",
                                         json={"sku": "w", "hold_s": 60}).get_json()
    client = make_app(**WAIT).test_client()
    response = client.post(f"/orders/{held['order_id']}/{action}?strategy={strategy}")
    assert response.status_code == 503
    assert problem_type(response) == "outcome-unknown"
    assert response.headers["Retry-After"]
    assert response.get_json()["order_id"] == held["order_id"]
    # The control: without WAIT the same request is answered (lock: it wrote nothing above).
    answer = make_app().test_client().post(
        f"/orders/{held['order_id']}/{action}?strategy={strategy}")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == {"confirm": "confirmed", "cancel": "cancelled"}[action]
