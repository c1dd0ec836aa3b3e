"""What WAIT costs: orders/s, p99 and CPU per order with REDIS_WAIT_REPLICAS=1 against 0.

A master with one replica and 3 Sentinels (the replica replicating directly, no proxy), and
two sets of --replicas service replicas on it: one with REDIS_WAIT_REPLICAS=0, one with 1. The
load goes to one set at a time, alternating which goes first in each round, so drift and noise
fall on both. Server CPU is the set under load; Redis CPU is the master's.
"""

from __future__ import annotations

import argparse
from statistics import median
from typing import Any

from harness.replicas import LocalReplicas
from harness.sentinel import SentinelRedis

from .cost import CostProbe
from .progress import Progress
from .throughput import run_level

WAIT_CONCURRENCY = {"lua": 16, "lock": 8}
SETTINGS = {"off": "0", "on": "1"}


def run_wait_scenario(args: argparse.Namespace) -> dict[str, Any]:
    count = args.replicas
    strategies = [s for s in args.strategy_list if s in WAIT_CONCURRENCY]
    rounds = [("off", "on") if number % 2 else ("on", "off")
              for number in range(1, args.wait_rounds + 1)]
    progress = Progress(len(rounds) * 2 * len(strategies), "wait")
    rows = []
    with SentinelRedis(link=False) as redis_set:
        replica_env = {index: {"REDIS_WAIT_REPLICAS": SETTINGS["off" if index <= count else "on"]}
                       for index in range(1, 2 * count + 1)}
        env = {**redis_set.service_env(), "REDIS_WAIT_TIMEOUT_MS": "500"}
        with LocalReplicas(replicas=2 * count, workers=args.workers, env=env,
                           redis_url=redis_set.url, replica_env=replica_env) as local, \
                redis_set.master.admin() as admin:
            sets = {"off": local.replicas[:count], "on": local.replicas[count:]}
            for number, order in enumerate(rounds, start=1):
                for strategy in strategies:
                    for setting in order:
                        replicas = sets[setting]
                        progress.level(f"round {number}, {strategy}, WAIT {SETTINGS[setting]}")
                        probe = CostProbe([r.process.pid for r in replicas], admin)
                        row = run_level([r.url for r in replicas], "wait", strategy,
                                        WAIT_CONCURRENCY[strategy], args.duration, 1, count,
                                        on_done=progress.on_done, probe=probe)
                        rows.append({"wait_replicas": int(SETTINGS[setting]), "round": number,
                                     **row.as_dict()})
                        progress.advance()
    progress.close()
    summary = {}
    notes = []
    for strategy in strategies:
        figures = {}
        for setting in SETTINGS:
            mine = [r for r in rows if r["strategy"] == strategy
                    and r["wait_replicas"] == int(SETTINGS[setting])]
            figures[setting] = {key: median(r[key] for r in mine if r.get(key) is not None)
                                for key in ("orders_per_s", "p99_ms", "server_cpu_ms_per_order",
                                            "redis_cpu_us_per_order")}
        off, on = figures["off"], figures["on"]
        cost = (off["orders_per_s"] - on["orders_per_s"]) / off["orders_per_s"] * 100 \
            if off["orders_per_s"] else 0.0
        summary[strategy] = {"off": off, "on": on, "cost_percent": round(cost, 1)}
        notes.append(
            f"{strategy} at {WAIT_CONCURRENCY[strategy]} clients, median of {len(rounds)} "
            f"rounds: {off['orders_per_s']:,.0f} orders/s (p99 {off['p99_ms']:.1f} ms, "
            f"{off['server_cpu_ms_per_order']:.2f} ms server CPU per order) without WAIT, "
            f"{on['orders_per_s']:,.0f} orders/s (p99 {on['p99_ms']:.1f} ms, "
            f"{on['server_cpu_ms_per_order']:.2f} ms) with WAIT 1: WAIT costs {cost:.1f} % of "
            "the orders/s.")
    return {"rows": rows, "summary": summary, "notes": notes}
