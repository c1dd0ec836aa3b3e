"""What a level costs, beside what it achieves: CPU per order on each side, Redis commands per
order, and the load client's own share of a core.

``CostProbe.start()`` before a level and ``stop(orders, elapsed_s)`` after it read:
- the server processes' CPU (user + system of every replica's gunicorn master and workers,
  from /proc through psutil), when the probe knows their pids (local runs);
- Redis's CPU (``INFO cpu``: used_cpu_user + used_cpu_sys) and its commands
  (``INFO commandstats``: the sum of every command's calls), over every master, when it has a
  Redis client; the probe's own INFO calls are taken out of the count;
- this process's CPU, the load client's: on one asyncio thread it cannot use more than one
  core, so a share near 100 % means the client, not the service, set the pace.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil
from redis.cluster import RedisCluster

# The client is taken as the limit when it used this much of its one core.
CLIENT_SATURATED_SHARE = 0.9
# Commands the probe itself sends per reading (INFO cpu and INFO commandstats, per master).
_PROBE_COMMANDS = 2


@dataclass
class Reading:
    server_cpu_s: float | None
    redis_cpu_s: float | None
    redis_commands: int | None
    client_cpu_s: float
    at: float


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and their children (live ones)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def _redis_totals(client: Any) -> tuple[float, int, int]:
    """(CPU seconds, commands served, masters read) over every master behind ``client``."""
    # A cluster client sends INFO to one node unless told to ask every master.
    where = ({"target_nodes": RedisCluster.PRIMARIES} if isinstance(client, RedisCluster)
             else {})
    cpu = client.info("cpu", **where)
    stats = client.info("commandstats", **where)
    # A RedisCluster answers per node: {"host:port": {...}}; one server answers flat.
    cpu_nodes = cpu.values() if "used_cpu_sys" not in cpu else [cpu]
    stat_nodes = (stats.values() if not any(k.startswith("cmdstat_") for k in stats)
                  else [stats])
    seconds = sum(float(node["used_cpu_sys"]) + float(node["used_cpu_user"])
                  for node in cpu_nodes)
    calls = sum(int(entry["calls"]) for node in stat_nodes for name, entry in node.items()
                if name.startswith("cmdstat_"))
    return seconds, calls, len(list(cpu_nodes))


class CostProbe:
    """Reads costs around a level. ``server_pids``: the gunicorn masters of the replicas (their
    workers are found as children); ``redis``: an administrator's client (one server or a
    cluster); either may be missing (a run against ``--url``)."""

    def __init__(self, server_pids: list[int] | None = None, redis: Any = None) -> None:
        self.server_pids = server_pids or []
        self.redis = redis
        self._client = psutil.Process(os.getpid())
        self._start: Reading | None = None
        self._masters = 0

    def _read(self) -> Reading:
        redis_cpu = commands = None
        if self.redis is not None:
            redis_cpu, commands, self._masters = _redis_totals(self.redis)
        times = self._client.cpu_times()
        return Reading(_tree_cpu(self.server_pids) if self.server_pids else None,
                       redis_cpu, commands, times.user + times.system, time.perf_counter())

    def start(self) -> None:
        self._start = self._read()

    def stop(self, orders: int, answers: int) -> dict[str, Any]:
        """Costs since ``start``: per order (created) and per answer (any status)."""
        end, begin = self._read(), self._start
        elapsed = end.at - begin.at
        per_order = 1000 / orders if orders else None  # seconds -> ms per order
        costs: dict[str, Any] = {
            "client_cpu_share": round((end.client_cpu_s - begin.client_cpu_s) / elapsed, 2)
            if elapsed else None}
        costs["client_saturated"] = bool(costs["client_cpu_share"] and
                                         costs["client_cpu_share"] >= CLIENT_SATURATED_SHARE)
        if end.server_cpu_s is not None and per_order:
            costs["server_cpu_ms_per_order"] = round(
                (end.server_cpu_s - begin.server_cpu_s) * per_order, 3)
        if end.redis_cpu_s is not None and per_order:
            costs["redis_cpu_us_per_order"] = round(
                (end.redis_cpu_s - begin.redis_cpu_s) * per_order * 1000, 1)
            served = end.redis_commands - begin.redis_commands - _PROBE_COMMANDS * self._masters
            costs["redis_commands_per_order"] = round(served / orders, 2)
        if answers and orders != answers and end.server_cpu_s is not None:
            costs["server_cpu_ms_per_answer"] = round(
                (end.server_cpu_s - begin.server_cpu_s) * 1000 / answers, 3)
        return costs
