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
KEYS = SkuKeys(SKU)


def set_stock(scripts, quantity):
    return scripts.set_stock(
        keys=[KEYS.stock, KEYS.supplied, KEYS.fence, *KEYS.reservation_keys, KEYS.limit, KEYS.sold],
        args=[quantity, "", KEYS.order_prefix])


def commit_order(scripts, handoff, token, new_stock, order_id):
    """commit_order's (written, released) for a 1-unit confirmed order (no customer, no hold);
    ``handoff``: the holder's ARGV[1..3] (see FencedLock.handoff_args)."""
    written, released, _, _ = scripts.commit_order(
        keys=[*KEYS.lock_keys, KEYS.stock, KEYS.sold, KEYS.order(order_id), *KEYS.reservation_keys],
        args=[*handoff, token, 1, new_stock, 1, order_id, SKU, "lock", "r", "t", "fp", 60, "",
              0])
    return written, released


def stale_holder_run(redis_client, *, fenced: bool) -> None:
    """A reads stock, pauses past its lease; B takes the lock, sells one; A writes."""
    scripts = OrderScripts.register(redis_client)
    set_stock(scripts, 10)

    def commit(token, new_stock, order_id):
        return commit_order(scripts, ["", 0, ""], token if fenced else "", new_stock,
                            order_id)[0]

    a = FencedLock(redis_client, KEYS.lock, timeout=0.05)
    assert a.acquire()
    a_saw = int(redis_client.get(KEYS.stock))
    while redis_client.exists(KEYS.lock):  # A is "paused" until its lease is gone
        time.sleep(0.01)

    b = FencedLock(redis_client, KEYS.lock, timeout=5)
    assert b.acquire(blocking=False)
    b_saw = int(redis_client.get(KEYS.stock))
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
    scripts = OrderScripts.register(redis_client)
    set_stock(scripts, 10)
    lock = FencedLock(redis_client, KEYS.lock, timeout=5)
    lock.acquire()
    set_stock(scripts, 3)
    written, released = commit_order(scripts, lock.handoff_args(), lock.fencing_token, 9, "x")
    assert (written, released) == (0, 1)  # refused, and the lock is passed on all the same
    assert redis_client.get(KEYS.stock) == "3" and not redis_client.exists(KEYS.lock)


def place_lua(scripts, quantity, order_id, customer="", hold_s=0):
    """The `lua` strategy's place_order (no Idempotency-Key)."""
    return scripts.place_order(
        keys=[KEYS.stock, KEYS.sold, KEYS.order(order_id), KEYS.fence, *KEYS.reservation_keys,
              KEYS.limit],
        args=[quantity, order_id, SKU, "lua", "r", "t", "fp", 60, customer, hold_s,
              KEYS.order_prefix])


@pytest.mark.parametrize("overtaker", ["cancel", "expiry"])
def test_a_lua_cancel_or_expiry_fences_out_a_holder_that_read_before(redis_client, books,
                                                                     overtaker):
    """Between a lock holder's read and its write, a `lua` cancel (settle_order), or a `lua`
    order that expires a due hold, puts units back in stock: the holder's stale stock value
    is refused, and the books stay balanced."""
    scripts = OrderScripts.register(redis_client)
    set_stock(scripts, 10)
    held = f"{SKU}~held"
    assert place_lua(scripts, 2, held, customer="c1", hold_s=600)[6] == "reserved"
    lock = FencedLock(redis_client, KEYS.lock, timeout=5)
    assert lock.acquire()
    expired = scripts.expire_holds(keys=[KEYS.lock, KEYS.fence, KEYS.stock, *KEYS.reservation_keys],
                                   args=[lock.handoff_args()[0], KEYS.order_prefix])[1]
    saw = int(redis_client.get(KEYS.stock))
    assert (expired, saw) == (0, 8)

    if overtaker == "cancel":
        code, _, _ = scripts.settle_order(
            keys=[KEYS.order(held), KEYS.stock, KEYS.sold, *KEYS.reservation_keys, KEYS.fence],
            args=["cancel", held, KEYS.order_prefix])
        assert code == 1
    else:
        redis_client.zadd(KEYS.holds, {held: 0})  # its deadline has passed
        code, *_, expired = place_lua(scripts, 100, f"{SKU}~big")  # out of stock all the same
        assert (code, expired) == (0, 1)
    assert redis_client.hget(KEYS.order(held), "status") == {"cancel": "cancelled",
                                                              "expiry": "expired"}[overtaker]

    written, released = commit_order(scripts, lock.handoff_args(), lock.fencing_token,
                                     saw - 1, f"{SKU}~stale")
    assert (written, released) == (0, 1)  # refused; the lock is passed on all the same
    assert not redis_client.exists(KEYS.order(f"{SKU}~stale"))
    state = books(SKU)
    reserved = (state.reserved if hasattr(state, "reserved")
                else int(redis_client.get(KEYS.reserved) or 0))
    assert (state.stock, reserved, state.sold, state.supplied) == (10, 0, 0, 10)
    assert state.stock + reserved + state.sold == state.supplied
    assert not redis_client.hexists(KEYS.customers, "c1")


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
