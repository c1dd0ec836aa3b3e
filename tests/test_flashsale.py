"""A flash sale through three real gunicorn replicas, on one Redis and on a Redis Cluster:
a crowd against a per-customer limit, reservations confirmed, cancelled and expired, and the
two races a payment window opens (a confirm against the expiry, a cancel against a confirm).
Each safety test first shows the unsafe `none` control failing the same assertion.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest

from harness.books import Books
from harness.load import run_burst
from harness.replicas import LocalReplicas

from .backends import RACE_ENV

pytestmark = pytest.mark.slow

CUSTOMERS, ORDERS_EACH, STOCK, LIMIT = 8, 5, 10, 2


@pytest.fixture(scope="module", params=["single", "cluster"])
def shop(request):
    with LocalReplicas(replicas=3, env=RACE_ENV, redis=request.param) as running:
        yield running


@pytest.fixture(scope="module")
def shop_redis(shop):
    client = shop.redis_client(decode_responses=True)
    yield client
    client.close()


def put_stock(shop, sku, **body):
    (answer,) = run_burst(shop.urls[:1], 1, f"/stock/{sku}", method="PUT", body=body)
    assert answer.status == 200, answer.body
    return answer.body


def expires(answer) -> float:
    """The reservation's deadline, as epoch seconds."""
    return datetime.fromisoformat(answer.body["expires_at"]).timestamp()


def reserve(shop, strategy, sku, count, hold_s):
    """``count`` reservations of one unit, by distinct customers, all at once."""
    answers = run_burst(shop.urls, count, f"/orders?strategy={strategy}",
                        body=lambda i: {"sku": sku, "customer_id": f"r{i}", "hold_s": hold_s})
    assert [a.status for a in answers] == [201] * count, [a.body for a in answers]
    return answers


# --- the crowd against a limit ----------------------------------------------------------------


def crowd(shop, strategy, sku, hold_s):
    """8 customers, each firing 5 orders of one unit at once, at 10 in stock with a limit of 2."""
    put_stock(shop, sku, quantity=STOCK, per_customer_limit=LIMIT)
    return run_burst(shop.urls, CUSTOMERS * ORDERS_EACH, f"/orders?strategy={strategy}",
                     body=lambda i: {"sku": sku, "customer_id": f"c{i % CUSTOMERS}",
                                     "hold_s": hold_s})


def assert_crowd_served(answers, books: Books) -> None:
    """Exactly the stock was taken, no customer past the limit (by the answers and by the
    records), every refusal a 409 for stock or the limit, and the books balance."""
    created = [a for a in answers if a.status == 201]
    refused = Counter(a.body["type"].rsplit("/", 1)[-1] for a in answers if a.status == 409)
    assert len(created) + sum(refused.values()) == len(answers), [a.status for a in answers]
    assert set(refused) <= {"out-of-stock", "customer-limit"}
    per_customer = Counter(a.body["customer_id"] for a in created)
    assert max(per_customer.values()) <= LIMIT, f"over the limit: {per_customer}"
    assert len(created) == STOCK, f"{len(created)} units taken of {STOCK}"
    books.assert_never_oversold()
    books.assert_within_limit(LIMIT)


def test_without_a_lock_the_crowd_breaks_the_limit_and_the_stock(shop, shop_redis):
    answers = crowd(shop, "none", "crowd-none", hold_s=60)
    assert {a.status for a in answers} <= {201, 409}  # answered: the failure is the sale's
    with pytest.raises(AssertionError, match="over the limit|units taken|oversold"):
        assert_crowd_served(answers, Books(shop_redis, "crowd-none"))


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_crowd_gets_exactly_the_stock_none_past_the_limit_then_pays_cancels_or_walks_away(
        shop, shop_redis, strategy):
    sku = f"crowd-{strategy}"
    answers = crowd(shop, strategy, sku, hold_s=4)
    books = Books(shop_redis, sku)
    assert_crowd_served(answers, books)
    assert (books.stock, books.reserved, books.sold) == (0, STOCK, 0)
    held = [a.body["order_id"] for a in answers if a.status == 201]
    paid, cancelled = held[:4], held[4:7]  # and the last 3 walk away

    confirms = run_burst(shop.urls, len(paid), lambda i: f"/orders/{paid[i]}/confirm")
    assert {a.status for a in confirms} == {200}
    books = Books(shop_redis, sku)
    assert (books.stock, books.reserved, books.sold) == (0, 6, 4)
    books.assert_never_oversold()

    cancels = run_burst(shop.urls, len(cancelled), lambda i: f"/orders/{cancelled[i]}/cancel")
    assert {a.status for a in cancels} == {200}
    books = Books(shop_redis, sku)
    assert (books.stock, books.reserved, books.sold) == (3, 3, 4)
    books.assert_never_oversold()
    books.assert_within_limit(LIMIT)

    last_deadline = max(expires(a) for a in answers if a.status == 201)
    time.sleep(max(0.0, last_deadline - time.time()) + 0.2)
    (seen,) = run_burst(shop.urls[:1], 1, f"/stock/{sku}", method="GET")
    assert (seen.body["stock"], seen.body["reserved"], seen.body["sold"]) == (6, 0, 4)
    # The units are on sale again: a newcomer takes one (its order expires the due holds).
    (late,) = run_burst(shop.urls[1:2], 1, f"/orders?strategy={strategy}",
                        body={"sku": sku, "customer_id": "late"})
    assert late.status == 201
    books = Books(shop_redis, sku)
    assert (books.stock, books.reserved, books.sold) == (5, 0, 5)
    statuses = Counter(order["status"] for order in books.orders)
    assert statuses == {"confirmed": 5, "cancelled": 3, "expired": 3}
    books.assert_never_oversold()
    books.assert_within_limit(LIMIT)


# --- a confirm against the expiry -------------------------------------------------------------

RACES = 20


def confirm_at_the_deadline(shop, strategy, sku):
    """20 reservations of 1 s; each confirmed within 20 ms either side of its deadline, while
    the others' confirms expire what is due."""
    put_stock(shop, sku, quantity=RACES)
    held = reserve(shop, strategy, sku, RACES, hold_s=1)
    start = time.time()
    offsets = [(i / (RACES - 1) - 0.5) * 0.04 for i in range(RACES)]
    answers = run_burst(shop.urls, RACES, lambda i: f"/orders/{held[i].body['order_id']}/confirm"
                        f"?strategy={strategy}",
                        delay_s=lambda i: expires(held[i]) + offsets[i] - start)
    return held, answers


def assert_decided_once(held, answers, books: Books, won: str, lost: str) -> None:
    """Each order went one way only: a 200 is an order in the ``won`` state, a 409 one in the
    ``lost`` state, and the books balance."""
    status = {order["order_id"]: order["status"] for order in books.orders}
    for reservation, answer in zip(held, answers, strict=True):
        order_id = reservation.body["order_id"]
        assert answer.status in (200, 409), answer.body
        assert status[order_id] == (won if answer.status == 200 else lost), order_id
    books.assert_never_oversold()
    assert sum(books.customer_counts.values()) == books.units("confirmed", "reserved")


def test_without_a_lock_a_confirm_and_the_expiry_both_happen(shop, shop_redis):
    held, answers = confirm_at_the_deadline(shop, "none", "expiry-none")
    assert {a.status for a in answers} <= {200, 409}
    with pytest.raises(AssertionError):
        assert_decided_once(held, answers, Books(shop_redis, "expiry-none"), "confirmed",
                            "expired")


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_confirm_at_the_deadline_is_decided_once(shop, shop_redis, strategy):
    sku = f"expiry-{strategy}"
    held, answers = confirm_at_the_deadline(shop, strategy, sku)
    time.sleep(max(0.0, max(expires(a) for a in held) - time.time()) + 0.05)
    run_burst(shop.urls[:1], 1, f"/orders?strategy={strategy}",  # expires what is due
              body={"sku": sku, "customer_id": "sweeper"})
    assert_decided_once(held, answers, Books(shop_redis, sku), "confirmed", "expired")


# --- a cancel against a confirm ---------------------------------------------------------------


def confirm_and_cancel_at_once(shop, strategy, sku):
    """20 reservations, each confirmed and cancelled at the same moment, on two replicas."""
    put_stock(shop, sku, quantity=RACES)
    held = reserve(shop, strategy, sku, RACES, hold_s=60)
    answers = run_burst(shop.urls, 2 * RACES,
                        lambda i: f"/orders/{held[i // 2].body['order_id']}/"
                                  f"{('confirm', 'cancel')[i % 2]}?strategy={strategy}")
    return held, answers


def assert_one_of_two_won(held, answers, books: Books) -> None:
    """Of each order's confirm and cancel exactly one answered 200, the record is what that
    one made it, and the books balance."""
    status = {order["order_id"]: order["status"] for order in books.orders}
    for n, reservation in enumerate(held):
        confirm, cancel = answers[2 * n], answers[2 * n + 1]
        assert sorted([confirm.status, cancel.status]) == [200, 409], (confirm.body, cancel.body)
        winner = "confirmed" if confirm.status == 200 else "cancelled"
        assert status[reservation.body["order_id"]] == winner
    books.assert_never_oversold()
    assert books.stock + books.sold == RACES and books.reserved == 0


def test_without_a_lock_a_cancel_and_a_confirm_both_win(shop, shop_redis):
    held, answers = confirm_and_cancel_at_once(shop, "none", "settle-none")
    assert {a.status for a in answers} <= {200, 409}
    with pytest.raises(AssertionError):
        assert_one_of_two_won(held, answers, Books(shop_redis, "settle-none"))


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_cancel_against_a_confirm_is_decided_once(shop, shop_redis, strategy):
    sku = f"settle-{strategy}"
    held, answers = confirm_and_cancel_at_once(shop, strategy, sku)
    assert_one_of_two_won(held, answers, Books(shop_redis, sku))
