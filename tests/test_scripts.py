"""Fast branch tests of each Lua script on fakeredis[lua]; the real-server tests are elsewhere."""

from __future__ import annotations

import fakeredis
import pytest

from service.keys import SkuKeys
from service.scripts import OrderScripts, source

KEYS = SkuKeys("sku")
IDEM = KEYS.idempotency("key-1")


@pytest.fixture
def fake():
    client = fakeredis.FakeRedis(decode_responses=True)
    return client, OrderScripts.register(client)


def record_args(quantity=1, order_id="sku~1", fp="sku\n1"):
    return [quantity, order_id, "sku", "lua", "r1", "2026-01-01T00:00:00.000+00:00", fp, 60]


def place(scripts, quantity=1, order_id="sku~1", idem=False, fp="sku\n1"):
    keys = [KEYS.stock, KEYS.sold, KEYS.order(order_id), KEYS.fence] + ([IDEM] if idem else [])
    return scripts.place_order(keys=keys, args=record_args(quantity, order_id, fp))


def test_place_order_creates_when_stock_suffices(fake):
    client, scripts = fake
    client.set(KEYS.stock, 3)
    assert place(scripts, quantity=3) == [1, 0, "sku~1", 0, "lua", "r1"]
    assert client.get(KEYS.stock) == "0" and client.get(KEYS.sold) == "3"
    assert client.get(KEYS.fence) == "1"  # a lock holder that read 3 can no longer write
    assert client.hgetall(KEYS.order("sku~1"))["quantity"] == "3"


def test_place_order_out_of_stock_writes_nothing(fake):
    client, scripts = fake
    client.set(KEYS.stock, 2)
    assert place(scripts, quantity=3) == [0, 0, "", 2, "lua", "r1"]
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
    assert place(scripts, idem=True, order_id="sku~2") == [1, 1, "sku~1", 4, "lua", "r1"]
    assert place(scripts, idem=True, fp="sku\n2")[0] == -1
    assert client.get(KEYS.stock) == "4" and not client.exists(KEYS.order("sku~2"))
    assert 0 < client.ttl(IDEM) <= 60


def test_place_order_replays_out_of_stock(fake):
    client, scripts = fake
    assert place(scripts, idem=True)[:2] == [0, 0]
    client.set(KEYS.stock, 5)
    assert place(scripts, idem=True)[:2] == [0, 1]


def commit(scripts, token, decision=1, stock=9, idem=False, holder=""):
    keys = [*KEYS.lock_keys, KEYS.stock, KEYS.sold, KEYS.order("sku~1")] + (
        [IDEM] if idem else [])
    written, released = scripts.commit_order(
        keys=keys, args=[holder, 1000, "g:", token, decision, stock, *record_args()])
    return written if not holder else (written, released)


def test_commit_order_needs_the_newest_token(fake):
    client, scripts = fake
    client.set(KEYS.fence, 7)
    assert commit(scripts, 6) == 0
    assert client.get(KEYS.stock) is None and not client.exists(KEYS.order("sku~1"))
    assert commit(scripts, 7) == 1
    assert client.get(KEYS.stock) == "9" and client.get(KEYS.sold) == "1"


def test_commit_order_releases_the_holders_lock_after_writing(fake):
    client, scripts = fake
    client.set(KEYS.fence, 3)
    client.set(KEYS.lock, "me")
    client.rpush(KEYS.lock_keys[2], "next")  # a waiter, registered until 2100 with a 1 s lease
    client.hset(KEYS.lock_keys[3], "next", "4102444800000:1000")
    assert commit(scripts, 3, holder="me") == (1, 1)
    assert client.get(KEYS.lock) == "next" and client.get(KEYS.stock) == "9"
    assert commit(scripts, 4, holder="me") == (1, 0)  # no longer the holder: nothing released


def test_commit_order_without_a_token_skips_the_check(fake):
    client, scripts = fake
    client.set(KEYS.fence, 7)
    assert commit(scripts, "") == 1


def test_commit_order_out_of_stock_records_only_the_key(fake):
    client, scripts = fake
    client.set(KEYS.fence, 1)
    client.set(KEYS.stock, 0)
    assert commit(scripts, 1, decision=0, stock=0, idem=True) == 1
    assert client.get(KEYS.sold) is None and not client.exists(KEYS.order("sku~1"))
    assert client.hgetall(IDEM)["code"] == "0"


def test_set_stock_balances_supplied_and_bumps_the_fence(fake):
    client, scripts = fake
    set_stock = lambda n: scripts.set_stock(  # noqa: E731
        keys=[KEYS.stock, KEYS.supplied, KEYS.fence], args=[n])
    assert set_stock(10) == 10
    client.decrby(KEYS.stock, 4)  # as if 4 were sold
    set_stock(8)
    assert client.get(KEYS.supplied) == "12"  # 10, then + (8 - 6)
    assert client.get(KEYS.fence) == "2"


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
    assert commit(scripts, 3, holder="me") == (1, 1)
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
