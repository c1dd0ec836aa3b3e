"""The ``metrics`` scenario: what the Prometheus metrics cost on the hot path (lua throughput
with METRICS_ENABLED on vs off, and the time to record one order by itself)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from statistics import median
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from harness.replicas import ROOT, LocalReplicas

from .cost import CostProbe
from .progress import Progress
from .throughput import run_level

METRICS_CONCURRENCY = 32


def metrics_status(url: str) -> tuple[int, float]:
    """GET /metrics: its status, and the lua orders created that it counts (0 if none)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, 0.0
    created = sum(sample.value for family in text_string_to_metric_families(text)
                  for sample in family.samples if sample.name == "orders_total"
                  and sample.labels == {"strategy": "lua", "outcome": "created"})
    return 200, created


RECORDING_CODE = """
import timeit
from service import metrics
metrics.configure(True)
calls = 50_000
print(timeit.timeit(lambda: metrics.order_finished("lua", "created", 0.01), number=calls) / calls)
"""


def recording_us_per_order() -> float:
    """What recording one order costs by itself (its counter and latency histogram, in
    multiprocess mode as under gunicorn), in microseconds: a figure free of the load's noise."""
    with tempfile.TemporaryDirectory() as directory:
        result = subprocess.run([sys.executable, "-c", RECORDING_CODE], cwd=ROOT,
                                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
                                capture_output=True, text=True, timeout=120, check=True)
    return float(result.stdout) * 1e6


def run_metrics_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """What the Prometheus metrics cost: lua throughput with METRICS_ENABLED on, then off.

    One local cluster holds both: --replicas replicas with the metrics on and as many with
    them off, on one Redis, each in multiprocess mode with a metrics directory of its own.
    The load goes to one set at a time (the other idles), alternating which goes first in
    each round, after an unrecorded warm-up of each, so drift and noise fall on both.
    """
    count = args.replicas
    settings = {"on": "1", "off": "0"}
    replica_env = {index: {"METRICS_ENABLED": settings["on" if index <= count else "off"]}
                   for index in range(1, 2 * count + 1)}
    # An empty PROMETHEUS_MULTIPROC_DIR: each replica gets a fresh one (see gunicorn.conf.py),
    # whatever this shell has set.
    env = {"PROMETHEUS_MULTIPROC_DIR": ""}
    rounds = [("on", "off") if number % 2 else ("off", "on")
              for number in range(1, args.metrics_rounds + 1)]
    progress = Progress(2 + 2 * len(rounds), "metrics")
    rows = []
    with LocalReplicas(replicas=2 * count, workers=args.workers, env=env,
                      replica_env=replica_env, redis=args.redis,
                      masters=args.masters) as cluster:
        urls = {"on": cluster.urls[:count], "off": cluster.urls[count:]}
        pids = [replica.process.pid for replica in cluster.replicas]
        # Server CPU per order beside the rate: the rate moves with the machine, the CPU an
        # order costs much less (cost.py). Local replicas only: a cluster client's Redis
        # figures would mix both sets, so Redis is left out.
        probes = {"on": CostProbe(pids[:count]), "off": CostProbe(pids[count:])}
        for setting, status in (("on", 200), ("off", 404)):  # each set is what it says
            for url in urls[setting]:
                if metrics_status(url)[0] != status:
                    raise RuntimeError(f"{url}/metrics is not {status} with metrics {setting}")
        warm_up = {}
        for setting in ("on", "off"):
            progress.level(f"warm-up, metrics {setting}")
            warm_up[setting] = run_level(urls[setting], "metrics-warmup", "lua",
                                         METRICS_CONCURRENCY, min(1.0, args.duration), 1,
                                         count).created
            progress.advance()
        for number, order in enumerate(rounds, start=1):
            for setting in order:
                progress.level(f"round {number}, metrics {setting}")
                row = run_level(urls[setting], "metrics", "lua", METRICS_CONCURRENCY,
                                args.duration, 1, count, on_done=progress.on_done,
                                probe=probes[setting])
                rows.append({"metrics": setting, "round": number, **row.as_dict()})
                progress.advance()
        # The metrics' own count of what the "on" replicas created (warm-up included).
        counted = sum(metrics_status(url)[1] for url in urls["on"])
    progress.close()
    rates = {setting: [r["orders_per_s"] for r in rows if r["metrics"] == setting]
             for setting in settings}
    on, off = median(rates["on"]), median(rates["off"])
    cost = (off - on) / off * 100 if off else 0.0
    # A level that created nothing has no CPU per order (cost.py leaves it out).
    cpu = {setting: median([r["server_cpu_ms_per_order"] for r in rows if r["metrics"] == setting
                            and r.get("server_cpu_ms_per_order") is not None] or [0.0])
           for setting in settings}
    cpu_cost = (cpu["on"] - cpu["off"]) / cpu["off"] * 100 if cpu["off"] else 0.0
    summary = {"rounds": len(rounds), "concurrency": METRICS_CONCURRENCY, "replicas": count,
               "on_orders_per_s": round(on, 1), "off_orders_per_s": round(off, 1),
               "cost_percent": round(cost, 2),
               "on_server_cpu_ms_per_order": cpu["on"], "off_server_cpu_ms_per_order": cpu["off"],
               "cpu_cost_percent": round(cpu_cost, 2),
               "created_with_metrics": warm_up["on"] + sum(r["created"] for r in rows
                                                           if r["metrics"] == "on"),
               "counted_by_metrics": int(counted),
               "recording_us_per_order": round(recording_us_per_order(), 2)}
    spread = {setting: f"{min(values):,.0f}-{max(values):,.0f}"
              for setting, values in rates.items()}
    notes = [f"lua orders/s at {METRICS_CONCURRENCY} clients on one SKU, {count} replica(s) "
             f"with METRICS_ENABLED=1 vs {count} with 0 (same Redis, load on one set at a "
             f"time), median of {len(rounds)} rounds: {on:,.0f} with metrics (range "
             f"{spread['on']}), {off:,.0f} without (range {spread['off']}): the metrics cost "
             f"{cost:.1f} % of the throughput (negative: within the noise). No scrape ran "
             f"during the load. Server CPU per order, medians: {cpu['on']:.3f} ms with "
             f"metrics, {cpu['off']:.3f} ms without ({cpu_cost:+.1f} %). After it, the "
             "metrics of the replicas with them on counted "
             f"{int(counted):,} lua orders created, of {summary['created_with_metrics']:,} "
             "answered 201 (warm-up included).",
             f"Recording one order by itself (its counter and latency histogram, multiprocess "
             f"mode) takes {summary['recording_us_per_order']:.1f} µs; at {on:,.0f} orders/s on "
             f"{os.cpu_count()} cores, an order costs the machine "
             f"{(os.cpu_count() or 1) / on * 1e6 if on else 0:,.0f} µs of CPU time in all."]
    return {"rows": rows, "summary": summary, "notes": notes}
