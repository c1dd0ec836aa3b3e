"""Round trips of an uncontended ``lock`` order: each is a network latency every order pays.

Counted on the client, as sends on its connections: a pipeline is one send.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from redis.connection import AbstractConnection

from service.keys import SkuKeys, new_order_id
from service.lock import FencedLock
from service.model import OrderRequest, PendingOrder

SKU = "counted"


def pending(idempotency_key: str | None) -> PendingOrder:
    request = OrderRequest(sku=SKU, quantity=1, strategy="lock", replica="r",
                           idempotency_key=idempotency_key)
    return PendingOrder(request=request, order_id=new_order_id(SKU),
                        created_at=datetime.now(UTC).isoformat(), idempotency_ttl_s=60)


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
@pytest.mark.parametrize("idempotency_key", [None, "key-1"], ids=["unkeyed", "keyed"])
def test_an_uncontended_lock_order_takes_two_round_trips(make_app, monkeypatch, books,
                                                         idempotency_key):
    """The acquire with the reads behind it, then the write that also releases."""
    service = make_app(lock_renewal=False).extensions["order_service"]
    service.set_stock(SKU, 10)
    strategy = service.strategies["lock"]
    strategy.place(pending(None))  # connections open, scripts loaded: what every later order finds

    sends = []
    send = AbstractConnection.send_packed_command

    def counted(connection, command, *args, **kwargs):
        sends.append(command)
        return send(connection, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    outcome = strategy.place(pending(idempotency_key))
    monkeypatch.undo()
    assert outcome.created and outcome.stock_left == 8
    assert len(sends) == 2
    assert books(SKU).stock == 8


@pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)
def test_a_replay_is_answered_at_once_while_another_holds_the_lock(make_app, redis_client):
    """The record rides on the acquire: a recorded request leaves the queue it just joined and
    is answered, instead of waiting for the lock (LOCK_WAIT_MS) to read it."""
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
