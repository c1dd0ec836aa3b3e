"""``none``: the unsafe control. Read, decide, write, with no lock and no fencing.

Concurrent orders read the same stock and each write their own decrement, so the SKU is
oversold. It exists to show what ``lua`` and ``lock`` prevent, and is only available with
ENABLE_UNSAFE_STRATEGY=1.
"""

from __future__ import annotations

from ..model import Outcome, PendingOrder
from .read_decide_write import ReadDecideWrite


class UnsafeNoneStrategy(ReadDecideWrite):
    name = "none"

    def place(self, order: PendingOrder) -> Outcome:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_reads(order)(pipe)
        return self.decide_and_write(order, pipe.execute(), lock=None)
