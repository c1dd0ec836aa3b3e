"""``python -m benchmarks``: reproduce the original experiment, then compare the strategies.

By default it starts a local Redis and 3 replicas (gunicorn, gunicorn.conf.py) on 127.0.0.1
(``--redis cluster``: a local Redis Cluster of ``--masters`` masters instead of one Redis);
with ``--url`` it runs against replicas already running and starts nothing. The scenarios are
in ``scenarios.py``, the goals they are checked against in ``goals.py``, the report in
``report.py``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.fault_scenarios import SCENARIOS as FAULTS
from harness.http import wait_ready
from harness.redis_server import admin_client
from harness.replicas import LocalReplicas, worker_class

from . import report
from .goals import check
from .scenarios import DEFAULT_SCENARIOS, LOCAL_ENV, NAMES, Target, run_scenarios


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--scenario", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated, from {', '.join(NAMES)}, or 'all'")
    parser.add_argument("--url", help="comma-separated base URLs of running replicas: start "
                        "nothing, measure them")
    parser.add_argument("--redis-url", help="with --url: the Redis behind them (for the lock "
                        "and redis scenarios and the Redis cost columns)")
    parser.add_argument("--redis", choices=("single", "cluster"), default="single",
                        help="the local Redis: one server, or a Redis Cluster of --masters "
                             "masters (with --url: what --redis-url names)")
    parser.add_argument("--masters", type=int, default=3,
                        help="masters of the local Redis Cluster (--redis cluster, and the "
                             "masters scenario's larger cluster)")
    parser.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                        help="with --url: wait up to this long for every URL's /readyz")
    parser.add_argument("--replicas", type=int, default=3, help="local replicas to start")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per replica")
    parser.add_argument("--strategies", default="lua,lock,none",
                        help="for throughput, spread and flashsale (seed always runs lock "
                             "and lua)")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per level")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput, spread: rounds of every level; each level reports "
                             "its median round")
    parser.add_argument("--spread-skus", type=int, default=100)
    parser.add_argument("--lock-duration", type=float, default=5.0,
                        help="lock: seconds per contender and round")
    parser.add_argument("--lock-rounds", type=int, default=5,
                        help="lock: alternating rounds of the contenders")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"for the faults scenario: comma-separated, from {', '.join(FAULTS)}")
    parser.add_argument("--fault-scale", type=float, default=1.0,
                        help="faults: multiply each fault run's number of customers")
    parser.add_argument("--metrics-rounds", type=int, default=5,
                        help="metrics: rounds of (metrics on, metrics off), --duration each")
    parser.add_argument("--wait-rounds", type=int, default=3,
                        help="wait: alternating rounds of WAIT 0 and WAIT 1, --duration each")
    parser.add_argument("--baseline-rounds", type=int, default=5,
                        help="baseline: alternating rounds of the three contenders")
    parser.add_argument("--baseline-concurrency", type=int, default=16,
                        help="baseline: clients (the hand-written comparison used wrk -c 16)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.scenarios = NAMES if args.scenario == "all" else tuple(
        s for s in args.scenario.split(",") if s)
    unknown = set(args.scenarios) - set(NAMES)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.fault_list = [f for f in args.faults.split(",") if f]
    unknown = set(args.fault_list) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    args.strategy_list = [s for s in args.strategies.split(",") if s]
    args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    command = "python -m benchmarks " + " ".join(argv or sys.argv[1:])
    if args.url:
        urls = [url.rstrip("/") for url in args.url.split(",")]
        if not wait_ready(urls, args.wait_ready):
            print(f"not ready within {args.wait_ready:g} s: {', '.join(urls)}", file=sys.stderr)
            return 2
        version = "unknown (--url)"
        if args.redis_url:
            with admin_client(args.redis_url, args.redis == "cluster") as client:
                version = client.info("server")
                version = version.get("redis_version") or next(
                    iter(version.values()))["redis_version"]
        return measure(args, Target(urls, args.redis_url), version, started, command)
    what = (f"a Redis Cluster of {args.masters} masters" if args.redis == "cluster"
            else "Redis")
    print(f"starting {what} and {args.replicas} replicas on 127.0.0.1 ...", flush=True)
    with LocalReplicas(replicas=args.replicas, workers=args.workers, env=LOCAL_ENV,
                       redis=args.redis, masters=args.masters) as local:
        print(f"redis {local.redis_url}; replicas {', '.join(local.urls)}\n", flush=True)
        target = Target(local.urls, local.redis_url, local)
        return measure(args, target, local.redis_server.version(), started, command)


def measure(args: argparse.Namespace, target: Target, redis_version: str, started: str,
            command: str) -> int:
    """Run the scenarios, check the goals, write the report; 1 if anything was oversold, a
    seed run was wrong, a fault broke an invariant it must keep or lua or lock broke the flash
    sale's, else 0."""
    scenarios = run_scenarios(args, target)
    checks = check(scenarios)
    local = target.local
    results = {
        "started": started, "command": command,
        "machine": report.machine(redis_version),
        "parameters": {"replicas": len(target.urls), "scenarios": ",".join(args.scenarios),
                       "strategies": args.strategies, "concurrency": args.concurrency,
                       "seconds per level": args.duration,
                       "rounds (throughput, spread)": args.rounds,
                       "spread SKUs": args.spread_skus,
                       "metrics rounds": args.metrics_rounds,
                       "gunicorn workers per replica": (local.workers or "default")
                       if local else "n/a",
                       "gunicorn worker class": worker_class() if local else "n/a",
                       "url": args.url or "local replicas",
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
    return 1 if failed(scenarios) else 0


def failed(scenarios: dict[str, Any]) -> bool:
    seed_failed = any(run["failures"] for run in scenarios.get("seed", {}).get("runs", []))
    safe_rows = [r for name in ("throughput", "spread", "masters", "replicas", "metrics")
                 for r in scenarios.get(name, {}).get("rows", []) if r["strategy"] != "none"]
    fault_violated = not all(row["as_expected"]
                             for row in scenarios.get("faults", {}).get("rows", []))
    sale_violated = any(row["violations"] for row in scenarios.get("flashsale", {}).get(
        "rows", []) if row["strategy"] != "none")
    return seed_failed or fault_violated or sale_violated or any(
        r["oversold"] or r["problems"] for r in safe_rows)


if __name__ == "__main__":
    sys.exit(main())
