"""``lua``: the whole order in one atomic server-side script, one round trip."""

from __future__ import annotations

from ..model import IdempotencyKeyReused, Outcome, PendingOrder
from ..scripts import OrderScripts


class LuaStrategy:
    name = "lua"

    def __init__(self, scripts: OrderScripts) -> None:
        self.place_order = scripts.place_order

    def place(self, order: PendingOrder) -> Outcome:
        keys = order.keys
        code, replayed, order_id, stock_left, strategy, replica = self.place_order(
            keys=[keys.stock, keys.sold, keys.order(order.order_id), keys.fence,
                  *order.idempotency_keys],
            args=order.record_args,
        )
        if code == -1:
            raise IdempotencyKeyReused()
        return order.outcome(code, order_id, stock_left, strategy, replica, bool(replayed))
