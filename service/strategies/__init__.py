"""The order strategies: each places one PendingOrder and returns its Outcome.

``lua`` and ``lock`` never oversell; ``none`` is the unsafe control that shows what they
prevent, built only when ENABLE_UNSAFE_STRATEGY is on.
"""

from __future__ import annotations

from typing import Protocol

import redis

from ..config import Settings
from ..model import Outcome, PendingOrder
from ..scripts import OrderScripts


class Strategy(Protocol):
    name: str

    def place(self, order: PendingOrder) -> Outcome: ...


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
