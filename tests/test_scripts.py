"""Fast branch tests of each Lua script on fakeredis[lua]; the real-server tests are elsewhere."""

from __future__ import annotations

import fakeredis
import pytest

from service.keys import SkuKeys
from service.scripts import OrderScripts, source

KEYS = SkuKeys("sku")
IDEM = KEYS.idempotency("key-1")
PREFIX = KEYS.order_prefix
HOLD_S = 30


@pytest.fixture
def fake():
    client = fakeredis.FakeRedis(decode_responses=True)
    return client, OrderScripts.register(client)


def redis_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def record_args(quantity=1, order_id="sku~1", fp="sku\n1", customer="", hold_s=0):
    return [quantity, order_id, "sku", "lua", "r1", "2026-01-01T00:00:00.000+00:00", fp, 60,
            customer, hold_s]


def place(scripts, quantity=1, order_id="sku~1", idem=False, fp="sku\n1", customer="",
          hold_s=0):
    keys = [KEYS.stock, KEYS.sold, KEYS.order(order_id), KEYS.fence, *KEYS.reservation_keys,
            KEYS.limit] + ([IDEM] if idem else [])
    return scripts.place_order(
        keys=keys, args=[*record_args(quantity, order_id, fp, customer, hold_s), PREFIX])


def reserve(client, scripts, order_id="sku~h", quantity=2, customer="c1", due=False):
    """A hold of `quantity` units for `customer` (due already with `due`)."""
    assert place(scripts, quantity, order_id, customer=customer, hold_s=HOLD_S)[0] == 1
    if due:
        client.zadd(KEYS.holds, {order_id: 0})


def state(client):
    """Everything the order scripts may write, for 'nothing changed' assertions."""
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def test_place_order_creates_when_stock_suffices(fake):
    client, scripts = fake
    client.set(KEYS.stock, 3)
    assert place(scripts, quantity=3) == [1, 0, "sku~1", 0, "lua", "r1", "confirmed", "", 0]
    assert client.get(KEYS.stock) == "0" and client.get(KEYS.sold) == "3"
    assert client.get(KEYS.fence) == "1"  # a lock holder that read 3 can no longer write
    order = client.hgetall(KEYS.order("sku~1"))
    assert (order["quantity"], order["status"], order["expires_ms"]) == ("3", "confirmed", "")
    assert client.get(KEYS.reserved) is None and not client.exists(KEYS.holds)


def test_place_order_out_of_stock_writes_nothing(fake):
    client, scripts = fake
    client.set(KEYS.stock, 2)
    assert place(scripts, quantity=3) == [0, 0, "", 2, "lua", "r1", "", "", 0]
    assert client.get(KEYS.stock) == "2" and client.get(KEYS.sold) is None
    assert client.get(KEYS.fence) is None
    assert not client.exists(KEYS.order("sku~1"))


def test_place_order_missing_stock_is_zero(fake):
    _, scripts = fake
    assert place(scripts)[0] == 0


def test_place_order_replays_and_detects_reuse(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    assert place(scripts, idem=True)[:2] == [1, 0]
    assert place(scripts, idem=True, order_id="sku~2") == [
        1, 1, "sku~1", 4, "lua", "r1", "confirmed", "", 0]
    assert place(scripts, idem=True, fp="sku\n2")[0] == -1
    assert client.get(KEYS.stock) == "4" and not client.exists(KEYS.order("sku~2"))
    assert 0 < client.ttl(IDEM) <= 60


def test_place_order_replays_out_of_stock(fake):
    client, scripts = fake
    assert place(scripts, idem=True)[:2] == [0, 0]
    client.set(KEYS.stock, 5)
    assert place(scripts, idem=True)[:2] == [0, 1]


def test_place_order_with_a_hold_reserves_until_the_deadline(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    before = redis_ms(client)
    reply = place(scripts, quantity=2, customer="c1", hold_s=HOLD_S, idem=True)
    after = redis_ms(client)
    code, replayed, order_id, stock_left, _, _, status, expires, expired = reply
    assert (code, replayed, order_id, stock_left, status, expired) == (
        1, 0, "sku~1", 3, "reserved", 0)
    assert before + HOLD_S * 1000 <= int(expires) <= after + HOLD_S * 1000
    assert client.zrange(KEYS.holds, 0, -1, withscores=True) == [("sku~1", int(expires))]
    assert client.get(KEYS.stock) == "3" and client.get(KEYS.reserved) == "2"
    assert client.get(KEYS.sold) is None and client.hgetall(KEYS.customers) == {"c1": "2"}
    order = client.hgetall(KEYS.order("sku~1"))
    assert (order["status"], order["customer_id"]) == ("reserved", "c1")
    assert int(order["expires_ms"]) == int(expires)
    assert client.get(KEYS.fence) == "1"
    replay = place(scripts, quantity=2, customer="c1", hold_s=HOLD_S, idem=True)
    assert replay[:3] == [1, 1, "sku~1"] and replay[6] == "reserved"
    assert int(replay[7]) == int(expires)


def test_place_order_over_the_customer_limit_records_only_the_key(fake):
    client, scripts = fake
    client.set(KEYS.stock, 10)
    client.set(KEYS.limit, 3)
    reserve(client, scripts, quantity=2, customer="c1")  # reserved units count too
    before = state(client)
    assert place(scripts, 2, "sku~2", idem=True, customer="c1") == [
        2, 0, "", 8, "lua", "r1", "", "", 0]
    record = client.hgetall(IDEM)
    assert (record["code"], record["order_id"], record["stock_left"]) == ("2", "", "8")
    assert state(client) == {**before, IDEM: client.dump(IDEM)}  # only the record is new
    assert place(scripts, 2, "sku~2", idem=True, customer="c1")[:2] == [2, 1]
    assert place(scripts, 1, "sku~3", customer="c1")[0] == 1  # up to the limit
    assert place(scripts, 3, "sku~4", customer="c2")[0] == 1  # another customer's own limit
    assert client.hgetall(KEYS.customers) == {"c1": "3", "c2": "3"}


def test_place_order_on_a_limited_sku_needs_a_customer(fake):
    client, scripts = fake
    client.set(KEYS.stock, 10)
    client.set(KEYS.limit, 3)
    before = state(client)
    assert place(scripts, idem=True) == [-2, 0, "", 0, "", "", "", "", 0]
    assert state(client) == before  # not even the idempotency record


def test_place_order_expires_due_holds_first(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    assert place(scripts, 1, "sku~c", customer="c1")[0] == 1  # confirmed: stays c1's
    reserve(client, scripts, "sku~live", quantity=1, customer="c2")  # not due
    reserve(client, scripts, "sku~h", quantity=2, customer="c1", due=True)
    assert (client.get(KEYS.stock), client.get(KEYS.fence)) == ("1", "3")
    # Too many units even after the expiry: only the expiry is written, and it moves the fence.
    assert place(scripts, 9, "sku~x", customer="c3") == [0, 0, "", 3, "lua", "r1", "", "", 1]
    assert client.get(KEYS.stock) == "3" and client.get(KEYS.reserved) == "1"
    assert client.hget(KEYS.order("sku~h"), "status") == "expired"
    assert client.hget(KEYS.order("sku~live"), "status") == "reserved"
    assert client.zrange(KEYS.holds, 0, -1) == ["sku~live"]
    assert client.hgetall(KEYS.customers) == {"c1": "1", "c2": "1"}
    assert client.get(KEYS.fence) == "4"
    assert place(scripts, 3, "sku~y")[-1] == 0  # nothing due any more
    assert client.get(KEYS.stock) == "0" and client.get(KEYS.sold) == "4"


def test_place_order_expiry_releases_the_customers_limit(fake):
    client, scripts = fake
    client.set(KEYS.stock, 10)
    client.set(KEYS.limit, 2)
    reserve(client, scripts, "sku~h", quantity=2, customer="c1", due=True)
    reply = place(scripts, 2, "sku~2", customer="c1")
    assert (reply[0], reply[-1]) == (1, 1)  # created, one hold expired
    assert client.hgetall(KEYS.customers) == {"c1": "2"}


def settle(scripts, action, order_id="sku~h"):
    code, expired, flat = scripts.settle_order(
        keys=[KEYS.order(order_id), KEYS.stock, KEYS.sold, *KEYS.reservation_keys, KEYS.fence],
        args=[action, order_id, PREFIX])
    return code, expired, dict(zip(flat[::2], flat[1::2], strict=True))


def books(client):
    """stock, reserved, sold, fence."""
    return tuple(int(client.get(key) or 0)
                 for key in (KEYS.stock, KEYS.reserved, KEYS.sold, KEYS.fence))


def test_settle_order_confirms_a_reservation(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1")
    assert books(client) == (3, 2, 0, 1)
    code, expired, order = settle(scripts, "confirm")
    assert (code, expired, order["status"]) == (1, 0, "confirmed")
    # The order changed under any lock holder's read of it: the fence moves on, so that
    # holder cannot settle it a second time (commit_settle refuses its write).
    assert books(client) == (3, 0, 2, 2)
    assert not client.exists(KEYS.holds) and client.hgetall(KEYS.customers) == {"c1": "2"}
    before = state(client)
    assert settle(scripts, "confirm")[:2] == (0, 0)  # already so
    assert settle(scripts, "cancel")[:2] == (2, 0)  # a confirmed order cannot be cancelled
    assert state(client) == before


def test_settle_order_cancels_a_reservation(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1")
    code, expired, order = settle(scripts, "cancel")
    assert (code, expired, order["status"]) == (1, 0, "cancelled")
    assert books(client) == (5, 0, 0, 2)  # units back in stock, the fence advanced
    assert not client.exists(KEYS.holds) and not client.exists(KEYS.customers)
    before = state(client)
    assert settle(scripts, "cancel")[0] == 0
    assert settle(scripts, "confirm")[0] == 2
    assert state(client) == before


def test_settle_order_of_a_due_hold_finds_it_expired(fake):
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1", due=True)
    code, expired, order = settle(scripts, "confirm")
    assert (code, expired, order["status"]) == (2, 1, "expired")
    assert books(client) == (5, 0, 0, 2)  # the expiry moved the stock: the fence advanced
    assert settle(scripts, "cancel")[:2] == (2, 0)


def test_settle_order_of_no_order(fake):
    client, scripts = fake
    assert settle(scripts, "confirm", "sku~none") == (-1, 0, {})
    assert state(client) == {}


def commit(scripts, token, decision=1, stock=9, idem=False, holder="", customer="",
           hold_s=0):
    """commit_order's reply: written, released, status, expires_ms."""
    keys = [*KEYS.lock_keys, KEYS.stock, KEYS.sold, KEYS.order("sku~1"), *KEYS.reservation_keys] + (
        [IDEM] if idem else [])
    return scripts.commit_order(
        keys=keys, args=[holder, 1000, "g:", token, decision, stock,
                         *record_args(customer=customer, hold_s=hold_s)])


def test_commit_order_needs_the_newest_token(fake):
    client, scripts = fake
    client.set(KEYS.fence, 7)
    assert commit(scripts, 6) == [0, 0, "", ""]
    assert client.get(KEYS.stock) is None and not client.exists(KEYS.order("sku~1"))
    assert commit(scripts, 7) == [1, 0, "confirmed", ""]
    assert client.get(KEYS.stock) == "9" and client.get(KEYS.sold) == "1"


def test_commit_order_releases_the_holders_lock_after_writing(fake):
    client, scripts = fake
    client.set(KEYS.fence, 3)
    client.set(KEYS.lock, "me")
    client.rpush(KEYS.lock_keys[2], "next")  # a waiter, registered until 2100 with a 1 s lease
    client.hset(KEYS.lock_keys[3], "next", "4102444800000:1000")
    assert commit(scripts, 3, holder="me")[:2] == [1, 1]
    assert client.get(KEYS.lock) == "next" and client.get(KEYS.stock) == "9"
    assert commit(scripts, 4, holder="me")[:2] == [1, 0]  # no longer the holder: none released


def test_commit_order_without_a_token_skips_the_check(fake):
    client, scripts = fake
    client.set(KEYS.fence, 7)
    assert commit(scripts, "")[0] == 1


def test_commit_order_out_of_stock_records_only_the_key(fake):
    client, scripts = fake
    client.set(KEYS.fence, 1)
    client.set(KEYS.stock, 0)
    assert commit(scripts, 1, decision=0, stock=0, idem=True) == [1, 0, "", ""]
    assert client.get(KEYS.sold) is None and not client.exists(KEYS.order("sku~1"))
    assert client.hgetall(IDEM)["code"] == "0"


def test_commit_order_books_a_hold_and_a_limit_decision(fake):
    client, scripts = fake
    client.set(KEYS.fence, 1)
    written, _, status, expires = commit(scripts, 1, customer="c1", hold_s=HOLD_S)
    assert (written, status) == (1, "reserved") and int(expires) > redis_ms(client)
    assert client.zscore(KEYS.holds, "sku~1") == int(expires)
    assert (client.get(KEYS.reserved), client.get(KEYS.sold)) == ("1", None)
    assert client.hgetall(KEYS.customers) == {"c1": "1"}
    client.delete(KEYS.order("sku~1"))
    assert commit(scripts, 1, decision=2, idem=True) == [1, 0, "", ""]
    assert client.hgetall(IDEM)["code"] == "2" and not client.exists(KEYS.order("sku~1"))


def commit_settle(scripts, token, action, stock=0, holder="", order_id="sku~h"):
    return scripts.commit_settle(
        keys=[*KEYS.lock_keys, KEYS.order(order_id), KEYS.stock, KEYS.sold, *KEYS.reservation_keys],
        args=[holder, 1000, "g:", token, action, stock, order_id, PREFIX])


@pytest.fixture
def held_under_lock(fake):
    """5 in stock, 2 of them reserved for c1 (order sku~h), the SKU's lock held by "me"."""
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1")
    client.set(KEYS.lock, "me")
    return client, scripts


def test_commit_settle_needs_the_newest_token(held_under_lock):
    client, scripts = held_under_lock
    before = state(client)
    assert commit_settle(scripts, 0, "cancel", stock=5) == [0, 0, 0]  # the fence is at 1
    assert state(client) == before
    assert commit_settle(scripts, 1, "cancel", stock=5, holder="me") == [1, 1, 0]
    assert books(client) == (5, 0, 0, 1)  # the holder's own write leaves the fence
    assert client.hget(KEYS.order("sku~h"), "status") == "cancelled"
    assert not client.exists(KEYS.holds) and not client.exists(KEYS.customers)
    assert not client.exists(KEYS.lock)


def test_commit_settle_confirms_or_only_releases(held_under_lock):
    client, scripts = held_under_lock
    before = state(client)
    assert commit_settle(scripts, 1, "", holder="other") == [1, 0, 0]  # nothing to write
    assert state(client) == before
    assert commit_settle(scripts, 1, "confirm") == [1, 0, 0]
    assert books(client) == (3, 0, 2, 1)
    assert client.hget(KEYS.order("sku~h"), "status") == "confirmed"
    assert client.hgetall(KEYS.customers) == {"c1": "2"} and not client.exists(KEYS.holds)


def expire_holds(scripts, token):
    return scripts.expire_holds(
        keys=[KEYS.lock, KEYS.fence, KEYS.stock, *KEYS.reservation_keys], args=[token, PREFIX])


@pytest.fixture
def due_hold(fake):
    """Stock 3 of 5, 2 units held by c1 past their deadline, the fence at 1, "me" holding the
    lock."""
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1", due=True)
    client.set(KEYS.lock, "me")
    return client, scripts


def test_expire_holds_by_the_lock_holder_leaves_the_fence(due_hold):
    client, scripts = due_hold
    before = redis_ms(client)
    now, expired = expire_holds(scripts, "me")
    assert now >= before and expired == 1
    assert books(client) == (5, 0, 0, 1)  # its own token stays the newest
    assert client.hget(KEYS.order("sku~h"), "status") == "expired"
    assert not client.exists(KEYS.holds) and not client.exists(KEYS.customers)


def test_expire_holds_by_a_waiter_changes_nothing(due_hold):
    client, scripts = due_hold
    before = state(client)
    assert expire_holds(scripts, "queued")[1] == 0
    assert state(client) == before


def test_expire_holds_without_a_lock_advances_the_fence(due_hold):
    client, scripts = due_hold
    assert expire_holds(scripts, "")[1] == 1
    assert books(client) == (5, 0, 0, 2)
    assert expire_holds(scripts, "")[1] == 0 and client.get(KEYS.fence) == "2"


def read_stock(scripts):
    return scripts.read_stock(
        keys=[KEYS.stock, KEYS.reserved, KEYS.sold, KEYS.holds, KEYS.limit], args=[PREFIX])


def test_read_stock_counts_due_holds_as_back_in_stock(fake):
    client, scripts = fake
    assert read_stock(scripts) == [0, 0, 0, ""]
    client.set(KEYS.stock, 10)
    client.set(KEYS.limit, 4)
    assert place(scripts, 1, "sku~c", customer="c0")[0] == 1
    reserve(client, scripts, "sku~h", quantity=2, customer="c1")
    reserve(client, scripts, "sku~live", quantity=3, customer="c2")
    assert read_stock(scripts) == [4, 5, 1, "4"]
    client.zadd(KEYS.holds, {"sku~h": 0})
    before = state(client)
    assert read_stock(scripts) == [6, 3, 1, "4"]
    assert state(client) == before  # a read: the hold is still there, still reserved


def set_stock(scripts, quantity, limit=""):
    return scripts.set_stock(
        keys=[KEYS.stock, KEYS.supplied, KEYS.fence, *KEYS.reservation_keys, KEYS.limit, KEYS.sold],
        args=[quantity, limit, PREFIX])


def test_set_stock_balances_supplied_and_bumps_the_fence(fake):
    client, scripts = fake
    assert set_stock(scripts, 10) == [10, 0, 0, "", 0]
    client.decrby(KEYS.stock, 4)  # as if 4 were sold
    set_stock(scripts, 8)
    assert client.get(KEYS.supplied) == "12"  # 10, then + (8 - 6)
    assert client.get(KEYS.fence) == "2"


def test_set_stock_sets_leaves_and_removes_the_limit(fake):
    client, scripts = fake
    assert set_stock(scripts, "", "3") == [0, 0, 0, "3", 0]  # the stock left as it is
    assert client.get(KEYS.stock) is None and client.get(KEYS.supplied) is None
    assert set_stock(scripts, 10) == [10, 0, 0, "3", 0]  # the limit left as it is
    assert set_stock(scripts, "", "5") == [10, 0, 0, "5", 0]
    assert client.get(KEYS.supplied) == "10"
    assert set_stock(scripts, "", "0") == [10, 0, 0, "", 0]
    assert not client.exists(KEYS.limit)
    assert client.get(KEYS.fence) == "4"  # every call


def test_set_stock_expires_due_holds_first(fake):
    client, scripts = fake
    set_stock(scripts, 10)
    reserve(client, scripts, "sku~live", quantity=3, customer="c2")
    reserve(client, scripts, "sku~h", quantity=2, customer="c1", due=True)
    assert set_stock(scripts, "") == [7, 3, 0, "", 1]  # the 2 due units are back: 1 hold
    assert client.hget(KEYS.order("sku~h"), "status") == "expired"
    assert set_stock(scripts, 4) == [4, 3, 0, "", 0]
    assert client.get(KEYS.supplied) == "7"  # stock 4 + reserved 3: the books balance


LOCK_KEYS = ["l", "f", "q", "d"]


def lock_script(client, name):
    """KEYS[5], the caller's own grant list, is declared by acquire and cancel (release ignores
    it)."""
    script = client.register_script(source(name))
    return lambda token, *extra, lease=1000: script(keys=[*LOCK_KEYS, "g:" + token],
                                                    args=[token, lease, "g:", *extra])


@pytest.fixture
def lock_ops(fake):
    """The fake client and the three lock scripts as callables: token, *ARGV[4:], lease=."""
    client, _ = fake
    return (client, *(lock_script(client, name)
                      for name in ("lock_acquire", "lock_release", "lock_cancel")))


def test_lock_scripts_hand_over_in_arrival_order(lock_ops):
    client, acquire, release, _ = lock_ops
    assert acquire("t1", -1) == [1, 1]
    held, pttl = acquire("t2", 5000)
    assert held == 0 and 0 < pttl <= 1000
    assert acquire("t3", 5000)[0] == 0
    assert acquire("t4", -1)[0] == 0  # a non-blocking caller is not queued
    assert client.lrange("q", 0, -1) == ["t2", "t3"]

    assert release("t2") == 0  # not the holder: nothing changes
    assert release("t1") == 1
    assert client.get("l") == "t2" and client.lrange("g:t2", 0, -1) == ["2"]
    assert acquire("t2", 5000) == [1, 2]  # the grant was already there
    assert not client.exists("g:t2")  # and is collected
    assert release("t2") == 1
    assert client.get("l") == "t3"
    assert release("t3") == 1
    assert not client.exists("l") and client.llen("q") == 0


def test_lock_scripts_skip_waiters_that_gave_up(lock_ops):
    client, acquire, release, cancel = lock_ops
    acquire("holder", -1)
    acquire("gone", 5000)
    acquire("stays", 5000)
    assert cancel("gone") == 0
    client.hset("d", "stays", "1:1000")  # its registration ran out long ago
    assert release("holder") == 1
    assert not client.exists("l")  # nobody left to hand it to


def test_lock_cancel_passes_on_a_lock_that_just_arrived(lock_ops):
    client, acquire, release, cancel = lock_ops
    acquire("holder", -1)
    acquire("late", 5000)
    acquire("next", 5000)
    release("holder")  # handed to "late", which gives up before it sees the grant
    assert cancel("late") == 1
    assert client.get("l") == "next" and not client.exists("g:late")


def test_lock_acquire_serves_the_queue_after_an_expired_lease(lock_ops):
    client, acquire, _, _ = lock_ops
    acquire("holder", -1)
    acquire("first", 5000)
    client.delete("l")  # the holder's lease ran out; nobody released
    assert acquire("newcomer", 5000)[0] == 0
    assert client.get("l") == "first" and client.lrange("q", 0, -1) == ["newcomer"]


def test_include_directive():
    text = source("lock_release")
    assert "--#include" not in text and "local function pass_on" in text


def test_a_waiter_gets_its_own_lease(lock_ops):
    client, acquire, release, _ = lock_ops
    acquire("holder", -1, lease=0)  # holds with no expiry
    acquire("waiter", 5000, lease=200)  # wants a 200 ms lease
    release("holder")
    assert client.get("l") == "waiter" and 0 < client.pttl("l") <= 200


def test_the_holder_calling_again_learns_that_it_holds_the_lock(lock_ops):
    """Its first answer was lost: it must not queue behind itself (see lock_acquire.lua)."""
    client, acquire, _, _ = lock_ops
    assert acquire("same", -1, lease=1000) == [1, 1]
    assert acquire("same", 5000, lease=60_000) == [1, 1]
    assert client.llen("q") == 0 and 1000 < client.pttl("l") <= 60_000  # lease renewed
    client.incr("f")  # a `lua` order overtook the holder: its reads come after this answer
    assert acquire("same", -1) == [1, 2]


def test_a_waiter_that_missed_its_grant_gets_the_counter_as_it_is_now(lock_ops):
    client, acquire, release, _ = lock_ops
    acquire("holder", -1)
    acquire("w", 5000)
    release("holder")  # grant "2" pushed to w
    client.incr("f")  # then a stock change
    assert acquire("w", 5000) == [1, 3] and not client.exists("g:w")


def test_commit_order_hands_over_with_the_plan_made_before_its_writes(fake):
    client, scripts = fake
    client.set(KEYS.fence, 3)
    client.set(KEYS.lock, "me")
    for token in ("gone", "next"):
        client.rpush(KEYS.lock_keys[2], token)
    client.hset(KEYS.lock_keys[3], mapping={"gone": "1:1000", "next": "4102444800000:1000"})
    assert commit(scripts, 3, holder="me")[:2] == [1, 1]
    assert client.get(KEYS.lock) == "next" and client.lrange("g:next", 0, -1) == ["4"]
    assert not client.exists(KEYS.lock_keys[2]) and not client.exists(KEYS.lock_keys[3])


def test_requeueing_drops_a_stale_grant(lock_ops):
    client, acquire, _, _ = lock_ops
    acquire("holder", -1)
    client.rpush("g:w", 7)  # left over from an earlier turn whose lease ran out
    acquire("w", 5000)
    assert not client.exists("g:w")


def test_abandoned_queues_expire(lock_ops):
    client, acquire, _, _ = lock_ops
    acquire("holder", -1)
    acquire("w", 3000)
    assert 0 < client.pttl("q") <= 4000 and 0 < client.pttl("d") <= 4000


def test_a_lua_confirm_fences_out_a_holder_that_read_the_reservation(fake):
    """A lock holder read the order as reserved; a lua confirm settles it first. The holder's
    cancel must be refused, or the unit would be both sold and back in stock."""
    client, scripts = fake
    client.set(KEYS.stock, 1)
    client.set(KEYS.supplied, 1)
    reserve(client, scripts, quantity=1, customer="c1")
    read_at = int(client.get(KEYS.fence))  # the holder's token when it read
    assert settle(scripts, "confirm")[0] == 1
    before = state(client)
    assert commit_settle(scripts, read_at, "cancel", stock=1) == [0, 0, 0]
    assert commit_settle(scripts, read_at, "confirm") == [0, 0, 0]
    assert state(client) == before
    assert books(client)[:3] == (0, 0, 1)


@pytest.mark.parametrize("action", ["confirm", "cancel"])
def test_commit_settle_past_the_deadline_expires_instead(fake, action):
    """The holder read the order before its deadline; the write comes after it (a slow round
    trip, a WAIT). The hold expires there, whatever the holder decided."""
    client, scripts = fake
    client.set(KEYS.stock, 5)
    reserve(client, scripts, quantity=2, customer="c1", due=True)
    assert commit_settle(scripts, 1, action, stock=5) == [1, 0, 1]
    assert books(client) == (5, 0, 0, 1)  # back in stock; the holder's token stays the newest
    assert client.hget(KEYS.order("sku~h"), "status") == "expired"
    assert not client.exists(KEYS.holds) and not client.exists(KEYS.customers)
