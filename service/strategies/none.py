"""``none``: the unsafe control. Read, decide, write, with no lock and no fencing.

Concurrent orders read the same stock and each write their own decrement, so the SKU is
oversold. It exists to show what ``lua`` and ``lock`` prevent, and is only available with
ENABLE_UNSAFE_STRATEGY=1.
"""

from __future__ import annotations

from typing import Any

from ..keys import SkuKeys
from ..model import Outcome, PendingOrder, Settlement
from ..redis_client import execute_on_master, master_of
from .read_decide_write import ReadDecideWrite, Reads


class UnsafeNoneStrategy(ReadDecideWrite):
    name = "none"

    def place(self, order: PendingOrder) -> Outcome:
        reads = self.loaded(lambda: self._read(order.keys, self.order_reads(order, "")), order.keys)
        return self.decide_and_write(order, reads, lock=None)

    def settle(self, sku: str, order_id: str, action: str) -> Settlement:
        keys = SkuKeys(sku)
        reads = self.loaded(lambda: self._read(keys, self.settle_reads(keys, order_id, "")), keys)
        return self.settle_from(keys, order_id, action, reads, lock=None)

    def _read(self, keys: SkuKeys, reads: Reads) -> list[Any]:
        """The reads in one round trip, on the SKU's master (a cluster pipeline refuses
        EVALSHA)."""
        pipe = master_of(self.redis, keys.stock).pipeline(transaction=False)
        reads(pipe)
        return execute_on_master(self.redis, pipe)
