"""The ``lock`` scenario: FencedLock against redis-py's own Lock, under contention.

3 processes x 8 threads take and release one lock name as fast as they can for a fixed time,
each contender in turn, for a few alternating rounds, each round starting with the next
contender (this machine's speed drifts between runs; the rounds share it). Reported per lock:
acquisitions/s (the median round, and each round's), the wait for each acquisition over all
rounds (p50 / p99 / max), how evenly the processes got the lock, and what an acquisition costs:
the CPU of the contending processes and of Redis, and Redis's commands. FencedLock also runs
with ``local_handoff=False`` (every thread queues in Redis): what its cohorts are worth,
measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from redis.lock import Lock

from harness.load import percentile
from harness.redis_server import admin_client
from service.lock import FencedLock

from .cost import CostProbe

# (label, lock class, its options beyond the lease and the give-up time)
CONTENDERS = [
    ("FencedLock", FencedLock, {}),
    ("FencedLock, every thread queues in Redis", FencedLock, {"local_handoff": False}),
    ("redis-py Lock (sleep 0.1 s, default)", Lock, {}),
    ("redis-py Lock (sleep 1 ms)", Lock, {"sleep": 0.001}),
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
    acquisitions_per_s: float  # the median round's
    rounds_acquisitions_per_s: list[float]
    wait_p50_ms: float
    wait_p99_ms: float
    wait_max_ms: float
    timeouts: int
    per_process: list[int]
    fairness: float  # fewest / most acquisitions of any process: 1.0 is perfectly even
    client_cpu_us_per_acq: float  # the contending processes', while the clock ran
    redis_cpu_us_per_acq: float | None
    redis_commands_per_acq: float | None

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
    lock_class, options = next((c, o) for lbl, c, o in CONTENDERS if lbl == label)
    client = admin_client(url, cluster, socket_timeout=5, max_connections=threads + 2)
    waits: list[float] = []
    timeouts = 0
    lock_guard = threading.Lock()

    stop_at = start_at + duration_s

    def worker() -> None:
        nonlocal timeouts
        lock = lock_class(client, name, timeout=LEASE_S, blocking_timeout=GIVE_UP_S, **options)
        started.wait()
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

    started = threading.Event()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    started.set()
    for thread in pool:
        thread.join()
    queue.put((waits, timeouts, time.process_time() - cpu))


@dataclass
class Round:
    waits: list[float]  # seconds, every acquisition's
    per_process: list[int]
    timeouts: int
    client_cpu_s: float
    redis: dict  # CostProbe's reading: Redis's CPU and commands per acquisition


def run_round(url: str, label: str, processes: int, threads: int, duration_s: float,
              cluster: bool) -> Round:
    """One contender for ``duration_s``."""
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
    with admin_client(url, cluster) as admin:
        probe = CostProbe(redis=admin)
        time.sleep(max(0.0, start_at - time.time()))
        probe.start()
        gathered = [queue.get(timeout=duration_s + GIVE_UP_S + 60) for _ in workers]
        acquisitions = sum(len(waits) for waits, _, _ in gathered)
        redis = probe.stop(acquisitions, acquisitions)
    for worker in workers:
        worker.join(30)
    return Round(waits=[w for waits, _, _ in gathered for w in waits],
                 per_process=[len(waits) for waits, _, _ in gathered],
                 timeouts=sum(timeouts for _, timeouts, _ in gathered),
                 client_cpu_s=sum(cpu for _, _, cpu in gathered), redis=redis)


def summarize(label: str, rounds: list[Round], processes: int, threads: int,
              duration_s: float) -> LockResult:
    waits = sorted(w * 1000 for r in rounds for w in r.waits)
    per_process = [sum(counts) for counts in zip(*(r.per_process for r in rounds), strict=True)]
    total = sum(per_process)
    rates = [round(sum(r.per_process) / duration_s, 1) for r in rounds]

    def mean_per_acquisition(cost: str) -> float | None:
        """``cost`` per acquisition over every round (each round's weighted by its count)."""
        if any(r.redis.get(cost) is None for r in rounds) or not total:
            return None
        return round(sum(r.redis[cost] * sum(r.per_process) for r in rounds) / total, 2)

    return LockResult(
        lock=label, processes=processes, threads=threads, duration_s=duration_s,
        acquisitions=total, acquisitions_per_s=statistics.median(rates),
        rounds_acquisitions_per_s=rates,
        wait_p50_ms=round(percentile(waits, 0.5), 2), wait_p99_ms=round(percentile(waits, 0.99), 2),
        wait_max_ms=round(waits[-1] if waits else 0.0, 2),
        timeouts=sum(r.timeouts for r in rounds), per_process=per_process,
        fairness=round(min(per_process) / max(per_process), 3) if max(per_process) else 0.0,
        client_cpu_us_per_acq=round(sum(r.client_cpu_s for r in rounds) * 1e6 / total, 1)
        if total else 0.0,
        redis_cpu_us_per_acq=mean_per_acquisition("redis_cpu_us_per_order"),
        redis_commands_per_acq=mean_per_acquisition("redis_commands_per_order"),
    )


def run_lock_benchmark(url: str, processes: int = 3, threads: int = 8, duration_s: float = 5.0,
                       cluster: bool = False, rounds: int = 3,
                       on_round: Callable[[], None] | None = None) -> list[LockResult]:
    """Every contender once per round; round i starts with contender i (so that none is
    always the one to run right after whatever ran before). ``cluster``: ``url`` names a node
    of a Redis Cluster."""
    labels = [label for label, _, _ in CONTENDERS]
    runs: dict[str, list[Round]] = {label: [] for label in labels}
    for number in range(rounds):
        first = number % len(labels)
        for label in labels[first:] + labels[:first]:
            runs[label].append(run_round(url, label, processes, threads, duration_s, cluster))
            if on_round is not None:
                on_round()
    return [summarize(label, results, processes, threads, duration_s)
            for label, results in runs.items()]
