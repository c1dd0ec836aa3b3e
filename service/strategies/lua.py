"""``lua``: each operation in one atomic server-side script, one round trip."""

from __future__ import annotations

from .. import metrics
from ..config import Settings
from ..keys import SkuKeys
from ..model import (
    CustomerRequired,
    IdempotencyKeyReused,
    OrderNotFound,
    OrderStateConflict,
    Outcome,
    PendingOrder,
    Settlement,
)
from ..records import OrderRecord
from ..redis_client import ReplicaWait
from ..scripts import OrderScripts


class LuaStrategy:
    name = "lua"

    def __init__(self, settings: Settings, scripts: OrderScripts) -> None:
        self.place_order = scripts.place_order
        self.settle_order = scripts.settle_order
        self.wait = ReplicaWait.from_settings(settings)

    def place(self, order: PendingOrder) -> Outcome:
        keys = order.keys
        reply, acknowledged = self.place_order.call_and_wait(
            [keys.stock, keys.sold, keys.order(order.order_id), keys.fence, *keys.reservation_keys,
             keys.limit, *order.idempotency_keys],
            [*order.record_args, keys.order_prefix], self.wait,
            mark=keys.read_mark,  # a replay writes nothing
        )
        code, replayed, order_id, stock_left, strategy, replica, status, expires, expired = reply
        metrics.holds_expired(expired)
        if not acknowledged:
            raise self.wait.unconfirmed("order", order_id or order.order_id)
        if code == -1:
            raise IdempotencyKeyReused()
        if code == -2:
            raise CustomerRequired(order.request.sku)
        return order.outcome(code, order_id, stock_left, status, expires, strategy, replica,
                             bool(replayed))

    def settle(self, sku: str, order_id: str, action: str) -> Settlement:
        keys = SkuKeys(sku)
        reply, acknowledged = self.settle_order.call_and_wait(
            [keys.order(order_id), keys.stock, keys.sold, *keys.reservation_keys, keys.fence],
            [action, order_id, keys.order_prefix], self.wait, mark=keys.read_mark)
        code, expired, fields = reply
        metrics.holds_expired(expired)
        if code == -1:
            raise OrderNotFound(f"No order {order_id!r}")
        record = OrderRecord.from_flat(fields)
        if not acknowledged:
            raise self.wait.unconfirmed(action, order_id)
        if code == 2:
            raise OrderStateConflict(record, action)
        return Settlement(record, changed=code == 1)
