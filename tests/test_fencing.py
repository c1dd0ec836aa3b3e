"""A holder whose lease ran out while it was paused cannot write its stale stock value."""

from __future__ import annotations

import threading
import time

import pytest

from service.keys import SkuKeys
from service.lock import FencedLock
from service.scripts import OrderScripts

from .waiting import wait_for

SKU = "widget"


def stale_holder_run(redis_client, *, fenced: bool) -> None:
    """A reads stock, pauses past its lease; B takes the lock, sells one; A writes."""
    keys = SkuKeys(SKU)
    scripts = OrderScripts.register(redis_client)
    scripts.set_stock(keys=[keys.stock, keys.supplied, keys.fence], args=[10])

    def commit(token, new_stock, order_id):
        written, _ = scripts.commit_order(
            keys=[*keys.lock_keys, keys.stock, keys.sold, keys.order(order_id)],
            args=["", 0, "", token if fenced else "", 1, new_stock, 1, order_id, SKU, "lock",
                  "r", "t", "fp", 60],
        )
        return written

    a = FencedLock(redis_client, keys.lock, timeout=0.05)
    assert a.acquire()
    a_saw = int(redis_client.get(keys.stock))
    while redis_client.exists(keys.lock):  # A is "paused" until its lease is gone
        time.sleep(0.01)

    b = FencedLock(redis_client, keys.lock, timeout=5)
    assert b.acquire(blocking=False)
    b_saw = int(redis_client.get(keys.stock))
    assert commit(b.fencing_token, b_saw - 1, f"{SKU}~b") == 1
    b.release()

    written = commit(a.fencing_token, a_saw - 1, f"{SKU}~a")  # A wakes up and writes
    assert written == (0 if fenced else 1)


def test_fencing_refuses_the_stale_write(redis_client, books):
    stale_holder_run(redis_client, fenced=True)
    state = books(SKU)
    assert (state.stock, state.sold, len(state.orders)) == (9, 1, 1)
    state.assert_never_oversold()


def test_without_fencing_the_stale_write_oversells(redis_client, books):
    stale_holder_run(redis_client, fenced=False)
    with pytest.raises(AssertionError, match="oversold"):
        books(SKU).assert_never_oversold()


def test_a_stock_change_fences_out_a_holder_that_read_the_old_stock(redis_client):
    keys = SkuKeys(SKU)
    scripts = OrderScripts.register(redis_client)
    scripts.set_stock(keys=[keys.stock, keys.supplied, keys.fence], args=[10])
    lock = FencedLock(redis_client, keys.lock, timeout=5)
    lock.acquire()
    scripts.set_stock(keys=[keys.stock, keys.supplied, keys.fence], args=[3])
    written, released = scripts.commit_order(
        keys=[*keys.lock_keys, keys.stock, keys.sold, keys.order("x")],
        args=[*lock.handoff_args(), lock.fencing_token, 1, 9, 1, "x", SKU, "lock", "r", "t",
              "fp", 60])
    assert (written, released) == (0, 1)  # refused, and the lock is passed on all the same
    assert redis_client.get(keys.stock) == "3" and not redis_client.exists(keys.lock)


def slow_and_fast_orders(make_app, redis_client, **slow_settings):
    """A slow lock order (1 s between read and write, lease 300 ms) and, while it sleeps,
    a fast one on another app. Returns both answers."""
    slow = make_app(enable_unsafe_strategy=True, critical_section_delay_ms=1000,
                    lock_ttl_ms=300, **slow_settings).test_client()
    fast = make_app(lock_wait_ms=2000).test_client()
    slow.put(f"/stock/{SKU}", json={"quantity": 10})
    answers = {}
    thread = threading.Thread(target=lambda: answers.update(
        slow=slow.post("/orders?strategy=lock", json={"sku": SKU})))
    thread.start()
    lock = SkuKeys(SKU).lock
    wait_for(lambda: redis_client.exists(lock), "the slow order holds the lock")
    time.sleep(0.65)  # two leases: without renewal the lock is gone by now
    answers["fast"] = fast.post("/orders?strategy=lock", json={"sku": SKU})
    thread.join(10)
    return answers["slow"], answers["fast"]


def test_a_live_slow_holder_keeps_its_lock_through_renewal(make_app, books, redis_client):
    slow, fast = slow_and_fast_orders(make_app, redis_client)
    assert (slow.status_code, fast.status_code) == (201, 201)
    assert fast.get_json()["stock_left"] == 8  # it waited for the slow order
    books(SKU).assert_never_oversold()


def test_order_whose_lock_expired_fails_cleanly(make_app, books, redis_client):
    """Without renewal the slow holder's lease runs out, the fast one takes the lock: the slow
    one's write is refused by the fencing check: 503, nothing recorded."""
    slow, fast = slow_and_fast_orders(make_app, redis_client, lock_renewal=False)
    assert fast.status_code == 201
    assert slow.status_code == 503
    assert slow.get_json()["type"] == "/problems/lock-lost" and slow.headers["Retry-After"]
    state = books(SKU)
    assert (state.stock, state.sold, len(state.orders)) == (9, 1, 1)
    state.assert_never_oversold()


def test_without_fencing_the_expired_holder_oversells(make_app, books, redis_client):
    slow, fast = slow_and_fast_orders(make_app, redis_client, lock_renewal=False,
                                      disable_fencing=True)
    assert (slow.status_code, fast.status_code) == (201, 201)
    with pytest.raises(AssertionError, match="oversold"):
        books(SKU).assert_never_oversold()
