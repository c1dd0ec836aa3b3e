"""``lua``: the whole order in one atomic server-side script, one round trip."""

from __future__ import annotations

from ..config import Settings
from ..model import IdempotencyKeyReused, Outcome, OutcomeUnknown, PendingOrder
from ..redis_client import ReplicaWait
from ..scripts import OrderScripts


class LuaStrategy:
    name = "lua"

    def __init__(self, settings: Settings, scripts: OrderScripts) -> None:
        self.place_order = scripts.place_order
        self.wait = ReplicaWait.from_settings(settings)

    def place(self, order: PendingOrder) -> Outcome:
        keys = order.keys
        reply, acknowledged = self.place_order.call_and_wait(
            [keys.stock, keys.sold, keys.order(order.order_id), keys.fence,
             *order.idempotency_keys],
            order.record_args, self.wait, mark=keys.read_mark,  # a replay writes nothing
        )
        code, replayed, order_id, stock_left, strategy, replica = reply
        if not acknowledged:
            raise OutcomeUnknown(
                f"Fewer than {self.wait.replicas} Redis replicas confirmed this order within "
                f"{self.wait.timeout_ms} ms; it may or may not stand: GET /orders/<order_id> "
                "or a retry with the same Idempotency-Key tells",
                order_id=order_id or order.order_id)
        if code == -1:
            raise IdempotencyKeyReused()
        return order.outcome(code, order_id, stock_left, strategy, replica, bool(replayed))
