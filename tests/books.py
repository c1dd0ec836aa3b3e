"""What Redis holds for a SKU, and the safety assertion every oversell test makes about it."""

from __future__ import annotations

import redis

from service.keys import SkuKeys


class Books:
    """What Redis holds for a SKU: the figures every safety assertion is about."""

    def __init__(self, client: redis.Redis, sku: str) -> None:
        keys = SkuKeys(sku)
        stock, sold, supplied = client.mget([keys.stock, keys.sold, keys.supplied])
        self.stock = int(stock or 0)
        self.sold = int(sold or 0)
        self.supplied = int(supplied or 0)
        self.orders = [client.hgetall(key) for key in client.scan_iter(keys.order("*"))]

    def assert_never_oversold(self) -> None:
        """Stock never below 0, stock + sold == all stock ever set, one record per unit sold."""
        assert self.stock >= 0, f"stock went below 0: {self.stock}"
        assert self.stock + self.sold == self.supplied, (
            f"oversold: stock {self.stock} + sold {self.sold} != supplied {self.supplied}")
        assert sum(int(order["quantity"]) for order in self.orders) == self.sold, (
            f"{len(self.orders)} order records do not add up to sold {self.sold}")
