"""The ``redis`` scenario: each strategy's Redis-side ceiling, without HTTP.

3 processes x 8 threads call the service's own domain object (``OrderService.place_order``:
the same scripts, the same FencedLock, the same records) on one hot SKU as fast as they can
for a fixed time. No Flask, no gunicorn, no load client: what is left is Redis and the
redis-py client, the limit the HTTP tier is measured against.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

from harness.load import percentile
from harness.redis_server import admin_client
from service.config import Settings
from service.model import OrderRequest
from service.orders import OrderService
from service.redis_client import connect

from .cost import CostProbe
from .lockbench import run_in_threads

STOCK = 1_000_000_000
START_DELAY_S = 1.5  # every process started and connected before the clock runs


def _drive(url: str, cluster: bool, strategy: str, sku: str, threads: int, duration_s: float,
           start_at: float, results: multiprocessing.Queue) -> None:
    settings = Settings(redis_url=url, redis_cluster=cluster,
                        replica_id=f"ceiling-{multiprocessing.current_process().pid}")
    service = OrderService(settings, connect(settings))
    latencies: list[float] = []
    failures = 0
    guard = threading.Lock()

    def caller() -> None:
        nonlocal failures
        request = OrderRequest(sku, 1, strategy, settings.replica_id)
        while time.time() < start_at:
            time.sleep(0.001)
        mine, failed = [], 0
        while time.time() < start_at + duration_s:
            asked = time.perf_counter()
            try:
                outcome = service.place_order(request)
            except Exception:  # a lock timeout or a Redis error: counted, not fatal
                failed += 1
                continue
            if outcome.created:
                mine.append(time.perf_counter() - asked)
        with guard:
            latencies.extend(mine)
            failures += failed

    run_in_threads(caller, threads)
    results.put((latencies, failures))


def run_strategy(url: str, strategy: str, cluster: bool = False, processes: int = 3,
                 threads: int = 8, duration_s: float = 3.0) -> dict[str, Any]:
    sku = f"ceiling-{strategy}-{time.time_ns()}"
    with admin_client(url, cluster) as admin:
        settings = Settings(redis_url=url, redis_cluster=cluster, replica_id="ceiling-setup")
        OrderService(settings, admin).set_stock(sku, STOCK)
        probe = CostProbe(redis=admin)
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        start_at = time.time() + START_DELAY_S
        workers = [context.Process(target=_drive, args=(url, cluster, strategy, sku, threads,
                                                        duration_s, start_at, results))
                   for _ in range(processes)]
        for worker in workers:
            worker.start()
        time.sleep(max(0.0, start_at - time.time()))
        probe.start()
        gathered = [results.get(timeout=duration_s + 60) for _ in workers]
        for worker in workers:
            worker.join(30)
        latencies = sorted(s * 1000 for mine, _ in gathered for s in mine)
        costs = probe.stop(len(latencies), len(latencies))
    costs.pop("client_cpu_share", None)
    costs.pop("client_saturated", None)
    return {"strategy": strategy, "processes": processes, "threads": threads,
            "orders_per_s": round(len(latencies) / duration_s, 1),
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "failures": sum(f for _, f in gathered), **costs}
