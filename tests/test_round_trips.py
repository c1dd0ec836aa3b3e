"""Round trips of a ``lock`` order: each is a network latency the order pays.

Counted on the client, as sends on its connections: a pipeline is one send.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from redis.connection import AbstractConnection

from service.keys import SkuKeys, new_order_id
from service.lock import FencedLock
from service.model import OrderRequest, PendingOrder

from .waiting import wait_for

SKU = "counted"


def pending(idempotency_key: str | None) -> PendingOrder:
    request = OrderRequest(sku=SKU, quantity=1, strategy="lock", replica="r",
                           idempotency_key=idempotency_key)
    return PendingOrder(request=request, order_id=new_order_id(SKU),
                        created_at=datetime.now(UTC).isoformat(), idempotency_ttl_s=60)


def counting_sends(monkeypatch, thread_id: list[int]) -> list[bytes]:
    """Sends on any connection, made by the thread whose id ends up in ``thread_id``."""
    sends = []
    send = AbstractConnection.send_packed_command

    def counted(connection, command, *args, **kwargs):
        if threading.get_ident() in thread_id:
            sends.append(command)
        return send(connection, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return sends


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
@pytest.mark.parametrize("idempotency_key", [None, "key-1"], ids=["unkeyed", "keyed"])
def test_an_uncontended_lock_order_takes_two_round_trips(make_app, monkeypatch, books,
                                                         idempotency_key):
    """The acquire with the reads behind it, then the write that also releases."""
    service = make_app(lock_renewal=False).extensions["order_service"]
    service.set_stock(SKU, 10)
    strategy = service.strategies["lock"]
    strategy.place(pending(None))  # connections open, scripts loaded: what every later order finds

    sends = counting_sends(monkeypatch, [threading.get_ident()])
    outcome = strategy.place(pending(idempotency_key))
    monkeypatch.undo()
    assert outcome.created and outcome.stock_left == 8
    assert len(sends) == 2
    assert books(SKU).stock == 8


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
def test_a_contended_lock_order_takes_two_round_trips_too(make_app, monkeypatch, redis_server,
                                                          redis_client):
    """The order finds the lock held: its acquire, the wait for the hand-off and its reads go
    in one round trip, then the write."""
    service = make_app(lock_renewal=False, lock_wait_ms=10_000).extensions["order_service"]
    service.set_stock(SKU, 10)
    strategy = service.strategies["lock"]
    strategy.place(pending(None))  # connections open, scripts loaded
    holder = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=60)
    assert holder.acquire(blocking=False)

    waiter_id: list[int] = []
    sends = counting_sends(monkeypatch, waiter_id)
    outcomes = []

    def order() -> None:
        waiter_id.append(threading.get_ident())
        outcomes.append(strategy.place(pending(None)))

    waiter = threading.Thread(target=order)
    waiter.start()
    with redis_server.server_for(SkuKeys(SKU).lock).admin() as admin:
        wait_for(lambda: admin.info("clients")["blocked_clients"],
                 "the order blocks, waiting for the hand-off")
    holder.release()
    waiter.join(30)
    monkeypatch.undo()
    assert outcomes and outcomes[0].created and outcomes[0].stock_left == 8
    assert len(sends) == 2


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
def test_a_replay_is_answered_at_once_while_another_holds_the_lock(make_app, redis_client):
    """The acquire script sees the request's record (``answer_keys``): a recorded request does
    not queue and is answered, instead of waiting for the lock (LOCK_WAIT_MS) to read it."""
    service = make_app(lock_renewal=False, lock_wait_ms=2000).extensions["order_service"]
    service.set_stock(SKU, 10)
    strategy = service.strategies["lock"]
    first = strategy.place(pending("key-1"))
    holder = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=60)
    assert holder.acquire(blocking=False)
    replay = strategy.place(pending("key-1"))
    assert replay.replayed and replay.order_id == first.order_id and replay.stock_left == 9
    assert holder.owned()  # untouched, and nobody left queued behind it
    assert redis_client.llen(SkuKeys(SKU).lock_keys[2]) == 0
    holder.release()
    assert strategy.place(pending("key-1")).replayed  # and with the lock free
    assert not redis_client.exists(SkuKeys(SKU).lock)
