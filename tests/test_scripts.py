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


def commit(scripts, token, decision=1, stock=9, idem=False):
    keys = [KEYS.fence, KEYS.stock, KEYS.sold, KEYS.order("sku~1")] + ([IDEM] if idem else [])
    return scripts.commit_order(keys=keys, args=[token, decision, stock, *record_args()])


def test_commit_order_needs_the_newest_token(fake):
    client, scripts = fake
    client.set(KEYS.fence, 7)
    assert commit(scripts, 6) == 0
    assert client.get(KEYS.stock) is None and not client.exists(KEYS.order("sku~1"))
    assert commit(scripts, 7) == 1
    assert client.get(KEYS.stock) == "9" and client.get(KEYS.sold) == "1"


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


def test_lock_scripts(fake):
    client, _ = fake
    acquire = client.register_script(source("lock_acquire"))
    release = client.register_script(source("lock_release"))
    assert acquire(keys=["l", "f"], args=["t1", 1000]) == [1, 1]
    held, pttl = acquire(keys=["l", "f"], args=["t2", 1000])
    assert held == 0 and 0 < pttl <= 1000
    assert release(keys=["l", "s"], args=["t2", 1000]) == 0
    assert release(keys=["l", "s"], args=["t1", 1000]) == 1
    assert client.lrange("s", 0, -1) == ["1"] and not client.exists("l")
    assert acquire(keys=["l", "f"], args=["t3", 0]) == [1, 2]
    assert client.pttl("l") == -1
