"""The lock after a lost answer, during a slot migration, and at first use: never held by nobody.

Each ends in a state a caller can act on: the lock held by a caller that knows it holds it, or
free; never set to a token whose owner was not told (that wedges the SKU for a whole lease).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import key_slot
from redis.retry import Retry

from harness.proxy import FlakyProxy
from service import lock as lock_module
from service import scripts
from service.keys import fence_key, grant_prefix, lock_keys
from service.lock import FencedLock

from .waiting import wait_for

LOCK = "{recovery}:lock"
ACQUIRE_SHA = hashlib.sha1(scripts.source("lock_acquire").encode()).hexdigest().encode()


def wait_until_blocked(server, count: int = 1) -> None:
    """Until ``count`` clients are blocked (BLPOP) on ``server``."""
    with server.admin() as admin:
        wait_for(lambda: admin.info("clients")["blocked_clients"] >= count,
                 f"{count} waiter(s) blocked")


# --- A lost answer --------------------------------------------------------------------------


@pytest.fixture
def proxy(single_redis, redis_client) -> Iterator[FlakyProxy]:
    """A proxy in front of the single redis-server that can lose one chosen answer. The
    acquire script is loaded already, so the EVALSHA it loses is one that ran."""
    redis_client.script_load(scripts.source("lock_acquire"))
    with FlakyProxy(single_redis.port) as flaky:
        flaky.clients = []
        yield flaky
        for client in flaky.clients:  # before the proxy stops: no connection cut under it
            client.close()


def through(proxy: FlakyProxy) -> redis.Redis:
    """A client through the proxy, as the service connects: no retries of its own."""
    client = redis.Redis.from_url(proxy.url, decode_responses=True, socket_timeout=5,
                                  retry=Retry(NoBackoff(), 0))
    proxy.clients.append(client)
    return client


def test_a_lost_answer_to_the_acquire_does_not_wedge_the_lock(proxy, redis_client):
    """The acquire took the lock, its answer was lost: the caller's next call must learn that
    it holds the lock, not wait on its grant list for a hand-off that will never come."""
    proxy.lose_reply_to(ACQUIRE_SHA)
    lock = FencedLock(through(proxy), LOCK, timeout=30)
    assert lock.acquire(blocking_timeout=2)
    assert proxy.dropped == 1
    assert redis_client.get(LOCK) == lock.local.token.decode()
    assert lock.fencing_token == int(redis_client.get(fence_key(LOCK)))
    lock.release()
    assert not redis_client.exists(LOCK)


def test_a_lost_answer_to_the_waiters_blpop_does_not_wedge_the_lock(proxy, single_redis,
                                                                    redis_client):
    """The release handed the lock to the waiter and its BLPOP popped the grant, but the answer
    was lost: the waiter's next call must learn that it holds the lock."""
    holder = FencedLock(redis_client, LOCK, timeout=30)
    holder.acquire()
    waiter = FencedLock(through(proxy), LOCK, timeout=30, thread_local=False)
    proxy.lose_reply_to(b"BLPOP")
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking_timeout=3)))
    thread.start()
    wait_until_blocked(single_redis)
    holder.release()
    thread.join(10)
    assert got == [True] and proxy.dropped == 1
    assert redis_client.get(LOCK) == waiter.local.token.decode()
    assert waiter.fencing_token == int(redis_client.get(fence_key(LOCK)))


def test_a_lost_answer_to_the_acquire_still_places_the_order(make_app, proxy, books):
    """What a user sees: the lock order answers 201, not 503 lock-timeout."""
    app = make_app(redis_url=proxy.url, lock_wait_ms=2000)
    proxy.clients.append(app.extensions["order_service"].redis)
    client = app.test_client()
    assert client.put("/stock/recovery", json={"quantity": 3}).status_code == 200
    proxy.lose_reply_to(ACQUIRE_SHA)
    answer = client.post("/orders?strategy=lock", json={"sku": "recovery"})
    assert proxy.dropped == 1
    assert answer.status_code == 201, answer.get_json()
    state = books("recovery")
    assert (state.stock, state.sold, len(state.orders)) == (2, 1, 1)


# --- A slot migration -----------------------------------------------------------------------


@contextmanager
def migrating(nodes, key: str) -> Iterator[None]:
    """The slot of ``key`` MIGRATING from its master to another (IMPORTING there), as
    ``redis-cli --cluster reshard`` leaves it before it moves the keys; made STABLE after."""
    slot = key_slot(key.encode())
    owner = nodes.server_for(key)
    target = next(server for server in nodes.servers if server is not owner)
    with owner.admin(decode_responses=True) as source, \
            target.admin(decode_responses=True) as destination:
        source_id = source.execute_command("CLUSTER MYID")
        destination_id = destination.execute_command("CLUSTER MYID")
        destination.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        try:
            source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", destination_id)
            yield
        finally:
            source.execute_command("CLUSTER SETSLOT", slot, "STABLE")
            destination.execute_command("CLUSTER SETSLOT", slot, "STABLE")


def lock_script(client: redis.RedisCluster, name: str):
    """``lua/<name>.lua`` on the lock: call with the caller's token and ARGV[4:]."""
    script = scripts.register(client, scripts.source(name))
    prefix = grant_prefix(LOCK)
    return lambda token, *extra: script(keys=[*lock_keys(LOCK), prefix + token],
                                        args=[token, 30_000, prefix, *extra])


def grant_of(client: redis.RedisCluster, token: str) -> list[str]:
    return client.lrange(grant_prefix(LOCK) + token, 0, -1)


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_a_release_during_a_slot_migration_frees_the_lock(redis_server, redis_client):
    """While the slot migrates, Redis refuses a waiter's grant list (it does not exist yet) in
    the middle of the release: the lock must not be left set to a waiter that was not told."""
    holder = FencedLock(redis_client, LOCK, timeout=30, local_handoff=False)
    holder.acquire()
    holder_token = holder.local.token.decode()
    waiter = FencedLock(redis_client, LOCK, timeout=30, thread_local=False, local_handoff=False)
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking_timeout=20)))
    thread.start()
    wait_until_blocked(redis_server.server_for(LOCK))
    waiter_token = redis_client.lindex(lock_keys(LOCK)[2], 0)
    with migrating(redis_server, LOCK):
        try:
            holder.release()
        except redis.RedisError:  # refused before it ran: the holder's lease ends it
            pass
        held_by, granted = redis_client.get(LOCK), grant_of(redis_client, waiter_token)
    thread.join(30)  # the waiter calls again within its longest block, after the migration
    assert held_by in (None, holder_token) or (held_by == waiter_token and granted)
    assert got == [True] and redis_client.get(LOCK) == waiter_token


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_a_cancel_during_a_slot_migration_frees_the_lock(redis_server, redis_client):
    """w1 was handed the lock and gives up before it saw the grant; its cancel passes the lock
    on to w2, whose grant list Redis refuses mid-script while the slot migrates."""
    acquire, release, cancel = (lock_script(redis_client, name)
                                for name in ("lock_acquire", "lock_release", "lock_cancel"))
    assert acquire("holder", -1)[0] == 1
    assert acquire("w1", 60_000)[0] == 0 and acquire("w2", 60_000)[0] == 0
    assert release("holder") == 1 and redis_client.get(LOCK) == "w1"
    with migrating(redis_server, LOCK):
        try:
            cancel("w1")
        except redis.RedisError:
            pass
        held_by, granted = redis_client.get(LOCK), grant_of(redis_client, "w2")
    assert held_by is None or (held_by == "w2" and granted)
    assert acquire("w2", 60_000)[0] == 1  # w2, still first in the queue, takes it when it calls


# --- First use ------------------------------------------------------------------------------


def test_a_lock_built_during_the_first_registration_has_every_script(monkeypatch, redis_client):
    """One thread registers the lock's scripts (the first lock of the process) while another
    builds a lock: the second must not find some scripts published and others not yet."""
    for name in ("lua_fenced_acquire", "lua_handoff_release", "lua_cancel_wait"):
        monkeypatch.setattr(FencedLock, name, None)
    registering, proceed = threading.Event(), threading.Event()
    register = scripts.register

    def slow_register(client, text):
        if threading.current_thread() is first and text == scripts.source("lock_release"):
            registering.set()
            proceed.wait(10)
        return register(client, text)

    monkeypatch.setattr(lock_module.scripts, "register", slow_register)
    first = threading.Thread(target=lambda: FencedLock(redis_client, LOCK))
    first.start()
    try:
        assert registering.wait(10)
        lock = FencedLock(redis_client, LOCK, timeout=5)
        assert lock.acquire(blocking=False)
        lock.release()
        assert not redis_client.exists(LOCK)
    finally:
        proceed.set()
        first.join(10)

