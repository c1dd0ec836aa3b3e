"""Idempotency-Key: what a key remembers, for how long, and what a refused request leaves.

One record per key and SKU, beside the stock it changed: a retry (same body, so same SKU)
always finds it, a refused request writes nothing, and the key is honoured for the whole
IDEMPOTENCY_TTL_S after the order that recorded it. The replay itself, on every replica and
across strategies, is in test_api.py and test_replicas.py.
"""

from __future__ import annotations

import time

import pytest
import redis

from service.keys import SkuKeys
from service.lock import FencedLock

from .backends import BACKENDS
from .waiting import wait_for

pytestmark = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)

SKU = "mug"


def keyed(client, key: str, strategy: str = "lua", **body: object):
    return client.post(f"/orders?strategy={strategy}", json={"sku": SKU, **body},
                       headers={"Idempotency-Key": key})


def state(client: redis.Redis) -> dict[str, tuple[object, bool]]:
    """Every key: its value, and whether it expires (its remaining time moves on by itself)."""
    values: dict[str, tuple[object, bool]] = {}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        value = {"hash": client.hgetall, "string": client.get, "list": client.lrange,
                 "zset": client.zrange}[kind](*([key, 0, -1] if kind in ("list", "zset")
                                                else [key]))
        values[key] = (value, client.ttl(key) > 0)
    return values


def refused_for_the_lock(client, redis_client: redis.Redis, key: str):
    """A keyed `lock` order while the SKU's lock is held elsewhere: 503 lock-timeout."""
    holder = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=30)
    assert holder.acquire(blocking=False)
    try:
        before = state(redis_client)
        refused = keyed(client, key, "lock")
        assert refused.status_code == 503, refused.get_json()
        assert refused.get_json()["type"] == "/problems/lock-timeout"
        return before, state(redis_client)
    finally:
        holder.release()


def test_a_keyed_order_refused_for_the_lock_records_nothing(make_app, redis_client):
    """README: 'a lock timeout records nothing'; with a key, too."""
    client = make_app(lock_wait_ms=50).test_client()
    client.put(f"/stock/{SKU}", json={"quantity": 5})
    before, after = refused_for_the_lock(client, redis_client, "first-try")
    assert after == before


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_key_is_scoped_to_its_sku(client, books, strategy):
    """The same key with another SKU is another request: its record lives with that SKU,
    so a keyed order needs its own SKU's master only (see test_redis_cluster.py)."""
    for sku in (SKU, "cup"):
        client.put(f"/stock/{sku}", json={"quantity": 5})
    send = lambda sku: client.post(  # noqa: E731
        f"/orders?strategy={strategy}", json={"sku": sku}, headers={"Idempotency-Key": "k"})
    mug, cup = send(SKU), send("cup")
    assert (mug.status_code, cup.status_code) == (201, 201), cup.get_json()
    assert mug.get_json()["order_id"] != cup.get_json()["order_id"]
    assert send("cup").get_json() == cup.get_json()  # each replays its own
    assert send(SKU).get_json() == mug.get_json()
    assert books(SKU).sold == books("cup").sold == 1


@pytest.mark.slow
def test_the_key_is_honoured_for_its_whole_ttl_after_a_failed_first_attempt(
        make_app, redis_client, books):
    """A first attempt refused (503, nothing recorded), the retry recorded later: the key
    then holds for IDEMPOTENCY_TTL_S from the retry. Past the first attempt's TTL, a reuse
    with another quantity is refused and changes nothing, and the original still replays."""
    ttl_s = 4
    client = make_app(idempotency_ttl_s=ttl_s, lock_wait_ms=50).test_client()
    client.put(f"/stock/{SKU}", json={"quantity": 5})
    refused_for_the_lock(client, redis_client, "late")
    first_try = time.monotonic()

    # The retry comes half a TTL later (the waits only pass Redis's clock; nothing is timed).
    wait_for(lambda: time.monotonic() > first_try + ttl_s / 2 + 0.1, "half a TTL", ttl_s)
    recorded = keyed(client, "late")
    assert recorded.status_code == 201
    record = SkuKeys(SKU).idempotency("late")
    assert 0 < redis_client.ttl(record) <= ttl_s

    # Past a whole TTL from the first attempt, still well inside the retry's.
    wait_for(lambda: time.monotonic() > first_try + ttl_s + 0.1, "a TTL", ttl_s)
    before = state(redis_client)
    reused = keyed(client, "late", quantity=2)
    assert reused.status_code == 422
    assert reused.get_json()["type"] == "/problems/idempotency-key-reused"
    assert state(redis_client) == before, "a refused reuse wrote something"
    again = keyed(client, "late")
    assert again.status_code == 201, again.get_json()
    assert again.get_json() == recorded.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert books(SKU).sold == 1
    assert redis_client.ttl(record) > 0
