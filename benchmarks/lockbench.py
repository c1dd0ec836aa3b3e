"""The ``lock`` scenario: FencedLock against redis-py's own Lock, under contention.

3 processes x 8 threads take and release one lock name as fast as they can for a fixed time.
Reported per lock: acquisitions/s, the wait for each acquisition (p50 / p99 / max), and how
evenly the processes got the lock.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from redis.lock import Lock

from harness.load import percentile
from harness.redis_server import admin_client
from service.lock import FencedLock

# (label, lock class, sleep between polls; None = the class's default)
CONTENDERS = [
    ("FencedLock", FencedLock, None),
    ("redis-py Lock (sleep 0.1 s, default)", Lock, None),
    ("redis-py Lock (sleep 1 ms)", Lock, 0.001),
]
LEASE_S = 10
GIVE_UP_S = 10


@dataclass
class LockResult:
    lock: str
    processes: int
    threads: int
    duration_s: float
    acquisitions: int
    acquisitions_per_s: float
    wait_p50_ms: float
    wait_p99_ms: float
    wait_max_ms: float
    timeouts: int
    per_process: list[int]
    fairness: float  # fewest / most acquisitions of any process: 1.0 is perfectly even

    def as_dict(self) -> dict:
        return asdict(self)


def run_in_threads(target: Callable[[], None], count: int) -> None:
    """Run ``target`` in ``count`` threads at once and wait for them all."""
    pool = [threading.Thread(target=target) for _ in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def _contend(url: str, cluster: bool, name: str, label: str, threads: int, duration_s: float,
             start_at: float, queue: multiprocessing.Queue) -> None:
    lock_class, sleep = next((c, s) for lbl, c, s in CONTENDERS if lbl == label)
    client = admin_client(url, cluster, socket_timeout=5, max_connections=threads + 2)
    waits: list[float] = []
    timeouts = 0
    lock_guard = threading.Lock()

    def worker() -> None:
        nonlocal timeouts
        kwargs = {"timeout": LEASE_S, "blocking_timeout": GIVE_UP_S}
        if sleep is not None:
            kwargs["sleep"] = sleep
        lock = lock_class(client, name, **kwargs)
        while time.time() < start_at:
            time.sleep(0.001)
        stop_at = start_at + duration_s
        while time.time() < stop_at:
            asked = time.perf_counter()
            if not lock.acquire():
                with lock_guard:
                    timeouts += 1
                continue
            waited = time.perf_counter() - asked
            lock.release()
            with lock_guard:
                waits.append(waited)

    run_in_threads(worker, threads)
    queue.put((waits, timeouts))


def run_contender(url: str, label: str, processes: int = 3, threads: int = 8,
                  duration_s: float = 5.0, cluster: bool = False) -> LockResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    name = f"bench-lock-{time.time_ns()}"
    start_at = time.time() + 1.5  # every process started and connected before the clock runs
    workers = [context.Process(target=_contend,
                               args=(url, cluster, name, label, threads, duration_s, start_at,
                                     queue))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    gathered = [queue.get(timeout=duration_s + GIVE_UP_S + 60) for _ in workers]
    for worker in workers:
        worker.join(30)
    waits = sorted(w * 1000 for waits, _ in gathered for w in waits)
    per_process = [len(waits_of) for waits_of, _ in gathered]
    total = sum(per_process)
    return LockResult(
        lock=label, processes=processes, threads=threads, duration_s=duration_s,
        acquisitions=total, acquisitions_per_s=round(total / duration_s, 1),
        wait_p50_ms=round(percentile(waits, 0.5), 2), wait_p99_ms=round(percentile(waits, 0.99), 2),
        wait_max_ms=round(waits[-1] if waits else 0.0, 2),
        timeouts=sum(t for _, t in gathered), per_process=per_process,
        fairness=round(min(per_process) / max(per_process), 3) if max(per_process) else 0.0,
    )


def run_lock_benchmark(url: str, processes: int = 3, threads: int = 8,
                       duration_s: float = 5.0, cluster: bool = False) -> list[LockResult]:
    """``cluster``: ``url`` names a node of a Redis Cluster."""
    return [run_contender(url, label, processes, threads, duration_s, cluster)
            for label, _, _ in CONTENDERS]
