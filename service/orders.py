"""The domain: place an order with a strategy, set and read stock, read recorded orders.

Nothing here knows about HTTP; nothing above this module knows about Redis keys.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import redis

from .config import Settings
from .errors import IdempotencyKeyReused, OrderNotFound
from .keys import SKU, SkuKeys, idempotency_claim
from .model import OrderRequest, Outcome, PendingOrder, new_order_id
from .scripts import OrderScripts
from .strategies import Strategy, build_strategies

ORDER_ID_PATTERN = re.compile(rf"^(?P<sku>{SKU})~[0-9a-f]{{20}}$")


class OrderService:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.scripts = OrderScripts.register(client)
        self.strategies: dict[str, Strategy] = build_strategies(settings, client, self.scripts)

    def place_order(self, request: OrderRequest) -> Outcome:
        """Place the order (created or out of stock); raises IdempotencyKeyReused or Unavailable."""
        if request.idempotency_key is not None:
            self._claim_idempotency_key(request)
        pending = PendingOrder(
            request=request,
            order_id=new_order_id(request.sku),
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            idempotency_ttl_s=self.settings.idempotency_ttl_s,
        )
        return self.strategies[request.strategy].place(pending)

    def _claim_idempotency_key(self, request: OrderRequest) -> None:
        """Bind the key to this request's fingerprint, whatever SKU (and so slot) it names.

        The per-SKU record written with the order makes replays exact; this claim only catches
        a key reused for a different SKU, whose record would live elsewhere.
        """
        claim = idempotency_claim(request.idempotency_key)
        pipe = self.redis.pipeline(transaction=False)  # one round trip: claim, then read back
        pipe.set(claim, request.fingerprint, nx=True, ex=self.settings.idempotency_ttl_s)
        pipe.get(claim)
        _, first = pipe.execute()
        if first is not None and first != request.fingerprint:
            raise IdempotencyKeyReused()

    def set_stock(self, sku: str, quantity: int) -> int:
        keys = SkuKeys(sku)
        return int(self.scripts.set_stock(keys=[keys.stock, keys.supplied, keys.fence],
                                          args=[quantity]))

    def stock(self, sku: str) -> tuple[int, int]:
        """(stock, sold) of the SKU, read atomically; an unknown SKU has (0, 0)."""
        keys = SkuKeys(sku)
        stock, sold = self.redis.mget([keys.stock, keys.sold])
        return int(stock or 0), int(sold or 0)

    def order(self, order_id: str) -> dict[str, object]:
        match = ORDER_ID_PATTERN.match(order_id)
        if match is None:
            raise OrderNotFound(f"No order {order_id!r}")
        record = self.redis.hgetall(SkuKeys(match["sku"]).order(order_id))
        if not record:
            raise OrderNotFound(f"No order {order_id!r}")
        record["quantity"] = int(record["quantity"])
        return record
