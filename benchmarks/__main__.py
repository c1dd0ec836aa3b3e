"""``python -m benchmarks``: reproduce the original experiment, then compare the strategies.

By default it starts a local Redis and 3 replicas (gunicorn, gunicorn.conf.py) on 127.0.0.1
(``--redis cluster``: a local Redis Cluster of ``--masters`` masters instead of one Redis);
with ``--target`` it runs against replicas already running and starts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .baseline import run_baseline_scenario
from .cluster import LocalCluster
from .cost import CostProbe
from .fault_scenarios import SCENARIOS as FAULTS
from .faults import run_variant
from .lockbench import run_lock_benchmark
from .memory import memory
from .metrics_cost import run_metrics_scenario
from .progress import Progress
from .redis_ceiling import run_strategy as run_redis_ceiling
from .redis_server import connect
from .seed import format_table, run_seed
from .targets import check
from .throughput import run_level

SCENARIOS = ("seed", "throughput", "spread", "masters", "replicas", "lock", "faults", "metrics",
             "baseline", "redis")
DEFAULT_SCENARIOS = ("seed", "throughput")
LOCAL_ENV = {"ENABLE_UNSAFE_STRATEGY": "1"}  # so the `none` control can run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--scenario", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated, from {', '.join(SCENARIOS)}, or 'all'")
    parser.add_argument("--target", help="comma-separated base URLs of running replicas")
    parser.add_argument("--redis-url", help="with --target: the Redis for the lock scenario")
    parser.add_argument("--redis", choices=("single", "cluster"), default="single",
                        help="the local Redis: one server, or a Redis Cluster of --masters "
                             "masters (with --target: what --redis-url names)")
    parser.add_argument("--masters", type=int, default=3,
                        help="masters of the local Redis Cluster (--redis cluster, and the "
                             "masters scenario's larger cluster)")
    parser.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                        help="with --target: wait up to this long for every target's /readyz")
    parser.add_argument("--replicas", type=int, default=3, help="local replicas to start")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per replica")
    parser.add_argument("--strategies", default="lua,lock,none",
                        help="for throughput and spread (seed always runs lock and lua)")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per level")
    parser.add_argument("--spread-skus", type=int, default=100)
    parser.add_argument("--lock-duration", type=float, default=5.0)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"for the faults scenario: comma-separated, from {', '.join(FAULTS)}")
    parser.add_argument("--fault-scale", type=float, default=1.0,
                        help="faults: multiply each fault run's number of customers")
    parser.add_argument("--metrics-rounds", type=int, default=3,
                        help="metrics: rounds of (metrics on, metrics off), --duration each")
    parser.add_argument("--baseline-rounds", type=int, default=3,
                        help="baseline: alternating rounds of the three contenders")
    parser.add_argument("--baseline-concurrency", type=int, default=16,
                        help="baseline: clients (the hand-written comparison used wrk -c 16)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.scenarios = SCENARIOS if args.scenario == "all" else tuple(
        s for s in args.scenario.split(",") if s)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.fault_list = [f for f in args.faults.split(",") if f]
    unknown = set(args.fault_list) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    args.strategy_list = [s for s in args.strategies.split(",") if s]
    args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c]
    return args


def run_seed_scenario(urls: list[str], cluster: LocalCluster | None) -> dict[str, Any]:
    """The original experiment per strategy; locally, each on replicas started afresh, so
    every burst is the first one after the replicas reported ready (the cold one)."""
    runs, texts = [], []
    for strategy in ("lock", "lua"):
        if cluster is not None:
            cluster.restart_replicas()
        run = run_seed(urls, strategy)
        texts.append(format_table(run))
        runs.append({"strategy": strategy, "created": run.created,
                     "out_of_stock": run.out_of_stock, "span_ms": round(run.span_s * 1000, 1),
                     "stock_after": run.stock_after, "sold_after": run.sold_after,
                     "per_replica": {r: dict(c) for r, c in run.per_replica().items()},
                     "failures": run.failures()})
    return {"runs": runs, "text": "\n\n".join(texts)}


def run_levels(urls: list[str], scenario: str, args: argparse.Namespace, skus: int,
               replicas: int, probe: CostProbe | None = None) -> dict[str, Any]:
    levels = [(s, c) for s in args.strategy_list for c in args.concurrency_list]
    progress = Progress(len(levels), scenario)
    rows = []
    for strategy, concurrency in levels:
        progress.level(f"{strategy} x{concurrency}")
        rows.append(run_level(urls, scenario, strategy, concurrency, args.duration, skus,
                              replicas, on_done=progress.on_done, probe=probe).as_dict())
        progress.advance()
    progress.close()
    notes = []
    saturated = [f"{r['strategy']} x{r['concurrency']}" for r in rows if r.get("client_saturated")]
    if saturated:
        notes.append(f"The load client used >= 90 % of its one core at {', '.join(saturated)}: "
                     "there the client, not the service, may have set the pace (server CPU "
                     "per order does not depend on it).")
    unsafe = [r for r in rows if r["strategy"] == "none"]
    if unsafe:
        notes.append(f"The unsafe `none` control oversold {sum(r['oversold'] for r in unsafe):,}"
                     f" units over {len(unsafe)} levels (stock + sold - stock set).")
    return {"rows": rows, "notes": notes}


def run_masters_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The spread scenario on a Redis Cluster of 1 master, then of ``--masters`` masters."""
    strategies = [s for s in args.strategy_list if s != "none"]
    counts = [1, args.masters]
    levels = [(m, s, c) for m in counts for s in strategies for c in args.concurrency_list]
    progress = Progress(len(levels), "masters")
    rows = []
    for masters in counts:
        with LocalCluster(replicas=args.replicas, workers=args.workers, env=LOCAL_ENV,
                          redis="cluster", masters=masters) as cluster:
            for _, strategy, concurrency in (lv for lv in levels if lv[0] == masters):
                progress.level(f"{masters} masters, {strategy} x{concurrency}")
                row = run_level(cluster.urls, "masters", strategy, concurrency, args.duration,
                                args.spread_skus, args.replicas, on_done=progress.on_done)
                rows.append({"masters": masters, **row.as_dict()})
                progress.advance()
    progress.close()
    return {"rows": rows, "notes": [
        f"The spread scenario ({args.spread_skus} SKUs) against a local Redis Cluster of 1 "
        f"master, then of {args.masters} masters (same replicas, same machine; each master "
        "is a redis-server process with its share of the 16384 slots)."]}


def run_replicas_scenario(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    counts = list(range(1, args.replicas + 1))
    progress = Progress(len(counts) * 2, "replicas")
    for count in counts:
        with LocalCluster(replicas=count, workers=args.workers, env=LOCAL_ENV,
                          redis=args.redis, masters=args.masters) as cluster:
            for strategy in ("lua", "lock"):
                progress.level(f"{count} replicas, {strategy}")
                rows.append(run_level(cluster.urls, "replicas", strategy, 32, args.duration, 1,
                                      count, on_done=progress.on_done).as_dict())
                progress.advance()
    progress.close()
    return {"rows": rows}


def run_lock_scenario(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    rows = [r.as_dict() for r in run_lock_benchmark(
        redis_url, duration_s=args.lock_duration, cluster=args.redis == "cluster")]
    return {"rows": rows, "notes": [
        "3 processes x 8 threads take and release one lock as fast as they can; "
        "fairness = fewest / most acquisitions of any process."]}


def run_redis_scenario(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    strategies = [s for s in args.strategy_list if s != "none"]
    progress = Progress(len(strategies), "redis")
    rows = []
    for strategy in strategies:
        progress.level(strategy)
        rows.append(run_redis_ceiling(redis_url, strategy, cluster=args.redis == "cluster",
                                      duration_s=args.duration))
        progress.advance()
    progress.close()
    return {"rows": rows, "notes": [
        "3 processes x 8 threads call OrderService.place_order directly (no HTTP) on one hot "
        "SKU: the ceiling Redis and the client library set for each strategy."]}


def run_faults_scenario(args: argparse.Namespace) -> dict[str, Any]:
    runs = [(FAULTS[name], variant) for name in args.fault_list
            for variant in FAULTS[name].variants]
    progress = Progress(len(runs), "faults")
    rows = []
    for scenario, variant in runs:
        progress.level(f"{scenario.name}: {variant.name}")
        rows.append(run_variant(scenario, variant, args.fault_scale).as_dict())
        progress.advance()
    progress.close()
    notes = [f"{row['scenario']}, {row['variant']}: {row['fault']}." for row in rows]
    return {"rows": rows, "notes": notes}


def run_all(urls: list[str], args: argparse.Namespace, redis_url: str | None,
            cluster: LocalCluster | None) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    if "seed" in args.scenarios:
        scenarios["seed"] = run_seed_scenario(urls, cluster)
        print(scenarios["seed"]["text"] + "\n", flush=True)
    own_processes = None if cluster else "it starts its own local processes (no --target)"
    levels = f"{len(urls)} replicas, {args.duration:g} s per level"
    probe = None
    if cluster is not None:  # after the seed: it restarts the replicas
        probe = CostProbe([r.process.pid for r in cluster.replicas], cluster.redis_client())
    elif redis_url:
        probe = CostProbe(redis=connect(redis_url, args.redis == "cluster"))
    sections = [  # name, why it is skipped (or None), how to run it, its title, its columns
        ("throughput", None,
         lambda args: run_levels(urls, "throughput", args, 1, len(urls), probe),
         f"throughput (1 SKU, {levels})", report.THROUGHPUT_COLUMNS),
        ("spread", None,
         lambda args: run_levels(urls, "spread", args, args.spread_skus, len(urls), probe),
         f"spread ({args.spread_skus} SKUs, {levels})", report.THROUGHPUT_COLUMNS),
        ("masters", own_processes, run_masters_scenario,
         f"masters (spread, {args.spread_skus} SKUs, on a Redis Cluster of 1 and of "
         f"{args.masters} masters)", report.MASTERS_COLUMNS),
        ("replicas", own_processes, run_replicas_scenario, "replicas",
         report.THROUGHPUT_COLUMNS),
        ("lock", None if redis_url else "give --redis-url with --target",
         lambda args: run_lock_scenario(args, redis_url),
         "lock (3 processes x 8 threads, one lock name)", report.LOCK_COLUMNS),
        ("faults", own_processes or ("it needs one local Redis (no --redis cluster)"
                                     if args.redis == "cluster" else None),
         run_faults_scenario, "faults (3 replicas and a Redis started afresh for each row; "
         "customers retry with their Idempotency-Key)", report.FAULT_COLUMNS),
        ("metrics", own_processes, run_metrics_scenario,
         "metrics (lua throughput with the Prometheus metrics on and off)",
         report.METRICS_COLUMNS),
        ("baseline", own_processes, run_baseline_scenario,
         f"baseline (one replica each, {args.baseline_concurrency} clients, "
         f"{args.duration:g} s per round)", report.BASELINE_COLUMNS),
        ("redis", None if redis_url else "give --redis-url with --target",
         lambda args: run_redis_scenario(args, redis_url),
         "redis (no HTTP: OrderService driven by 3 processes x 8 threads)",
         report.REDIS_COLUMNS),
    ]
    for name, skipped, run, title, columns in sections:
        if name not in args.scenarios:
            continue
        if skipped:
            print(f"{name}: skipped, {skipped}\n")
            continue
        scenarios[name] = run(args)
        print(title)
        print(report.table(scenarios[name]["rows"], columns))
        for note in scenarios[name].get("notes", []):
            print(note)
        print(flush=True)
    if cluster is not None:
        measured = memory(cluster)
        rss = ", ".join(f"{name} {mib} MiB" for name, mib in
                        measured["rss_mib_per_replica"].items())
        text = (f"Resident memory per replica (gunicorn master + workers, after the run): {rss}."
                f" Redis memory per recorded order: {measured['redis_bytes_per_order']} bytes "
                f"(MEMORY USAGE of the order hash, mean over {measured['orders_measured']:,} "
                "lua orders; the per-SKU counters are shared by all of a SKU's orders).")
        scenarios["memory"] = {"data": measured, "notes": [text]}
        print(f"memory: {text}\n")
    return scenarios


def wait_ready(urls: list[str], seconds: float) -> bool:
    """Whether every URL's /readyz answers 200 within ``seconds`` (0: no check at all)."""
    if seconds <= 0:
        return True
    deadline = time.monotonic() + seconds
    pending = list(urls)
    while True:
        for url in list(pending):
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        pending.remove(url)
            except OSError:
                pass
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")

    def finish(urls, redis_url, redis_version, cluster=None) -> int:
        scenarios = run_all(urls, args, redis_url, cluster)
        checks = check(scenarios)
        results = {
            "started": started, "command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
            "machine": report.machine(redis_version),
            "parameters": {"replicas": len(urls), "scenarios": ",".join(args.scenarios),
                           "strategies": args.strategies, "concurrency": args.concurrency,
                           "seconds per level": args.duration, "spread SKUs": args.spread_skus,
                           "metrics rounds": args.metrics_rounds,
                           "gunicorn workers x threads per replica":
                               f"{cluster.workers or 'default'} x "
                               f"{cluster.threads or 'default'}" if cluster else "n/a",
                           "target": args.target or "local cluster",
                           "redis": (f"Redis Cluster, {args.masters} masters"
                                     if args.redis == "cluster" else "one redis-server")},
            "scenarios": scenarios,
            "targets": checks,
        }
        scenarios["targets"] = {"rows": [], "text": report.table(
            checks, [("target", "target"), ("measured", "measured"), ("verdict", "verdict")])}
        print("targets\n" + scenarios["targets"]["text"] + "\n")
        written = report.write(args.out, results)
        print(f"report: {', '.join(str(p) for p in written)}")
        seed_failed = any(run["failures"] for run in scenarios.get("seed", {}).get("runs", []))
        unsafe_rows = [r for name in ("throughput", "spread", "masters", "replicas", "metrics")
                       for r in scenarios.get(name, {}).get("rows", [])
                       if r["strategy"] != "none"]
        fault_violated = not all(row["as_expected"]
                                 for row in scenarios.get("faults", {}).get("rows", []))
        return 1 if seed_failed or fault_violated or any(
            r["oversold"] or r["problems"] for r in unsafe_rows) else 0

    if args.target:
        urls = [url.rstrip("/") for url in args.target.split(",")]
        if not wait_ready(urls, args.wait_ready):
            print(f"targets not ready within {args.wait_ready:g} s: {', '.join(urls)}",
                  file=sys.stderr)
            return 2
        version = "unknown (--target)"
        if args.redis_url:
            with connect(args.redis_url, args.redis == "cluster") as client:
                version = client.info("server")
                version = version.get("redis_version") or next(
                    iter(version.values()))["redis_version"]
        return finish(urls, args.redis_url, version)
    what = (f"a Redis Cluster of {args.masters} masters" if args.redis == "cluster"
            else "Redis")
    print(f"starting {what} and {args.replicas} replicas on 127.0.0.1 ...", flush=True)
    with LocalCluster(replicas=args.replicas, workers=args.workers, env=LOCAL_ENV,
                      redis=args.redis, masters=args.masters) as cluster:
        print(f"redis {cluster.redis_url}; replicas {', '.join(cluster.urls)}\n", flush=True)
        return finish(cluster.urls, cluster.redis_url, cluster.redis_server.version(), cluster)


if __name__ == "__main__":
    sys.exit(main())
