"""What a run costs in memory: resident memory per replica, Redis bytes per recorded order."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil

from harness.http import put_stock
from harness.load import closed_loop
from harness.replicas import LocalReplicas
from service.keys import SkuKeys


def memory(cluster: LocalReplicas) -> dict[str, Any]:
    """Resident memory per replica (master + workers), and Redis bytes per recorded order."""
    rss = {}
    for replica in cluster.replicas:
        master = psutil.Process(replica.process.pid)
        rss[replica.replica_id] = sum(p.memory_info().rss for p in [master, *master.children()])
    sku, orders = f"memory-{time.time_ns()}", 1000
    put_stock(cluster.urls[0], sku, orders)
    run = asyncio.run(closed_loop(cluster.urls, 8, 60, "/orders?strategy=lua",
                                  body={"sku": sku}, max_requests=orders))
    order_keys = [SkuKeys(sku).order(r.body["order_id"]) for r in run.results if r.status == 201]
    # MEMORY USAGE of each order record: used_memory deltas drown in buffer and allocator noise.
    with cluster.redis_client() as client:
        pipe = client.pipeline(transaction=False)
        for key in order_keys:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    return {"rss_mib_per_replica": {k: round(v / 2**20, 1) for k, v in rss.items()},
            "redis_bytes_per_order": round(sum(sizes) / len(sizes), 1) if sizes else None,
            "orders_measured": len(sizes)}
