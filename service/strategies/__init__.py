"""The order strategies: each places a PendingOrder and returns its Outcome, and confirms or
cancels a reserved order.

``lua`` and ``lock`` never oversell; ``none`` is the unsafe control that shows what they
prevent, built only when ENABLE_UNSAFE_STRATEGY is on.
"""

from __future__ import annotations

from typing import Protocol

import redis

from ..config import Settings
from ..model import Outcome, PendingOrder, Settlement
from ..scripts import OrderScripts


class Strategy(Protocol):
    name: str

    def place(self, order: PendingOrder) -> Outcome: ...

    def settle(self, sku: str, order_id: str, action: str) -> Settlement:
        """``action`` ("confirm" or "cancel") on order ``order_id`` of ``sku``.

        Raises OrderNotFound, or OrderStateConflict when the order is in a state that does
        not allow it (nothing changes)."""
        ...


def build_strategies(
    settings: Settings, client: redis.Redis, scripts: OrderScripts
) -> dict[str, Strategy]:
    from .lock import LockStrategy
    from .lua import LuaStrategy
    from .none import UnsafeNoneStrategy

    strategies: list[Strategy] = [LuaStrategy(settings, scripts),
                                  LockStrategy(settings, client, scripts)]
    if settings.enable_unsafe_strategy:
        strategies.append(UnsafeNoneStrategy(settings, client, scripts))
    return {strategy.name: strategy for strategy in strategies}
