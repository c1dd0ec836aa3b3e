"""The benchmark's scenarios: what each one runs, what it needs, and how its table reads.

``SCENARIOS`` is the table ``python -m benchmarks --scenario`` picks from; each entry adapts one
measuring module (throughput, lockbench, faults, ...) to the command line's arguments and says
why it is skipped when what it needs is not there (its own local processes, a Redis URL).
``run_scenarios`` runs the chosen ones in order, printing each table as it is done.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.experiment import run_seed
from harness.fault_scenarios import SCENARIOS as FAULTS
from harness.faults import run_variant
from harness.redis_server import admin_client
from harness.replicas import LocalReplicas
from service.cohort import LOCAL_TURNS

from . import flashsale, report
from .baseline import run_baseline_scenario
from .cost import CostProbe
from .lockbench import CONTENDERS, run_lock_benchmark
from .memory import memory
from .metrics_cost import run_metrics_scenario
from .progress import Progress
from .redis_ceiling import run_strategy as run_redis_ceiling
from .seed import format_table
from .throughput import LevelResult, combine_rounds, run_level
from .wait_cost import run_wait_scenario

DEFAULT_SCENARIOS = ("seed", "throughput")
LOCAL_ENV = {"ENABLE_UNSAFE_STRATEGY": "1"}  # so the `none` control can run


@dataclass
class Target:
    """What the scenarios run against: replica URLs, and the Redis behind them if known.

    ``local`` is set when the benchmark started the replicas itself (no ``--url``).
    """

    urls: list[str]
    redis_url: str | None
    local: LocalReplicas | None = None
    probe: CostProbe | None = None


def run_seed_scenario(urls: list[str], local: LocalReplicas | None) -> dict[str, Any]:
    """The original experiment per strategy; locally, each on replicas started afresh, so
    every burst is the first one after the replicas reported ready (the cold one)."""
    runs, texts = [], []
    for strategy in ("lock", "lua"):
        if local is not None:
            local.restart_replicas()
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
    """Every level once per round (``--rounds``); each round starts with the next strategy,
    so that none always runs first or right after another. One row per level: see
    ``combine_rounds``."""
    strategies, concurrencies = args.strategy_list, args.concurrency_list
    progress = Progress(len(strategies) * len(concurrencies) * args.rounds, scenario)
    runs: dict[tuple[str, int], list[LevelResult]] = {
        (s, c): [] for s in strategies for c in concurrencies}
    for number in range(args.rounds):
        turn = number % len(strategies)
        for strategy in [*strategies[turn:], *strategies[:turn]]:
            for concurrency in concurrencies:
                progress.level(f"round {number + 1}, {strategy} x{concurrency}")
                runs[strategy, concurrency].append(run_level(
                    urls, scenario, strategy, concurrency, args.duration, skus, replicas,
                    on_done=progress.on_done, probe=probe))
                progress.advance()
    progress.close()
    rows = [combine_rounds(rounds).as_dict() for rounds in runs.values()]
    notes = []
    saturated = [f"{r['strategy']} x{r['concurrency']}" for r in rows if r.get("client_saturated")]
    if saturated:
        notes.append(f"The load client used >= 90 % of its one core at {', '.join(saturated)}: "
                     "there the client, not the service, may have set the pace (server CPU "
                     "per order does not depend on it).")
    unsafe = [r for r in rows if r["strategy"] == "none"]
    if unsafe:
        notes.append(f"The unsafe `none` control oversold {sum(r['oversold'] for r in unsafe):,}"
                     f" units over {len(unsafe)} levels x {args.rounds} rounds (stock + sold"
                     " - stock set).")
    return {"rows": rows, "notes": notes}


def run_masters_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The spread scenario on a Redis Cluster of 1 master, then of ``--masters`` masters."""
    strategies = [s for s in args.strategy_list if s != "none"]
    counts = [1, args.masters]
    levels = [(m, s, c) for m in counts for s in strategies for c in args.concurrency_list]
    progress = Progress(len(levels), "masters")
    rows = []
    for masters in counts:
        with LocalReplicas(replicas=args.replicas, workers=args.workers, env=LOCAL_ENV,
                          redis="cluster", masters=masters) as local:
            for _, strategy, concurrency in (lv for lv in levels if lv[0] == masters):
                progress.level(f"{masters} masters, {strategy} x{concurrency}")
                row = run_level(local.urls, "masters", strategy, concurrency, args.duration,
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
        with LocalReplicas(replicas=count, workers=args.workers, env=LOCAL_ENV,
                          redis=args.redis, masters=args.masters) as local:
            for strategy in ("lua", "lock"):
                progress.level(f"{count} replicas, {strategy}")
                rows.append(run_level(local.urls, "replicas", strategy, 32, args.duration, 1,
                                      count, on_done=progress.on_done).as_dict())
                progress.advance()
    progress.close()
    return {"rows": rows}


def run_lock_scenario(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    progress = Progress(len(CONTENDERS) * args.lock_rounds, "lock")
    rows = [r.as_dict() for r in run_lock_benchmark(
        redis_url, duration_s=args.lock_duration, cluster=args.redis == "cluster",
        rounds=args.lock_rounds, on_round=progress.advance)]
    progress.close()
    return {"rows": rows, "notes": [
        "3 processes x 8 threads take and release one lock as fast as they can, "
        f"{args.lock_duration:g} s per contender, {args.lock_rounds} alternating rounds; "
        "acq/s is the median round's (each round's in results.json), the waits are every "
        "round's; fairness = fewest / most acquisitions of any process.",
        "FencedLock hands the lock to the threads of its own process first, at most "
        f"{LOCAL_TURNS} in a row while other processes wait (service/cohort.py); "
        "'every thread queues in Redis' is the same lock with that switched off."]}


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


def run_flashsale_scenario(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """The flash sale (``flashsale.py``) for each of ``--strategies``, one fresh SKU each."""
    client = (target.local.redis_client(decode_responses=True) if target.local else
              admin_client(target.redis_url, args.redis == "cluster", decode_responses=True))
    progress = Progress(len(args.strategy_list), "flashsale")
    rows = []
    try:
        for strategy in args.strategy_list:
            progress.level(strategy)
            rows.append(flashsale.run_sale(target.urls, client, strategy,
                                           on_done=progress.on_done))
            progress.advance()
    finally:
        progress.close()
        client.close()
    return {"rows": rows, "notes": flashsale.notes(rows)}


def _own_processes(args: argparse.Namespace, target: Target) -> str | None:
    return None if target.local else "it starts its own local processes (no --url)"


def _redis_url_given(args: argparse.Namespace, target: Target) -> str | None:
    return None if target.redis_url else "give --redis-url with --url"


def _one_local_redis(args: argparse.Namespace, target: Target) -> str | None:
    return _own_processes(args, target) or (
        "it needs one local Redis (no --redis cluster)" if args.redis == "cluster" else None)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[argparse.Namespace, Target], dict[str, Any]]
    title: Callable[[argparse.Namespace, Target], str]
    columns: list[tuple[str, str]]
    skipped: Callable[[argparse.Namespace, Target], str | None] = lambda args, target: None


def _levels(args: argparse.Namespace, target: Target) -> str:
    return (f"{len(target.urls)} replicas, {args.duration:g} s per level, the median of "
            f"{args.rounds} rounds")


SCENARIOS = {s.name: s for s in (
    Scenario("throughput",
             lambda args, t: run_levels(t.urls, "throughput", args, 1, len(t.urls), t.probe),
             lambda args, t: f"throughput (1 SKU, {_levels(args, t)})",
             report.ROUNDS_COLUMNS),
    Scenario("spread",
             lambda args, t: run_levels(t.urls, "spread", args, args.spread_skus, len(t.urls),
                                        t.probe),
             lambda args, t: f"spread ({args.spread_skus} SKUs, {_levels(args, t)})",
             report.ROUNDS_COLUMNS),
    Scenario("masters", lambda args, t: run_masters_scenario(args),
             lambda args, t: f"masters (spread, {args.spread_skus} SKUs, on a Redis Cluster of 1 "
                             f"and of {args.masters} masters)",
             report.MASTERS_COLUMNS, _own_processes),
    Scenario("replicas", lambda args, t: run_replicas_scenario(args),
             lambda args, t: "replicas", report.THROUGHPUT_COLUMNS, _own_processes),
    Scenario("lock", lambda args, t: run_lock_scenario(args, t.redis_url),
             lambda args, t: "lock (3 processes x 8 threads, one lock name)",
             report.LOCK_COLUMNS, _redis_url_given),
    Scenario("faults", lambda args, t: run_faults_scenario(args),
             lambda args, t: "faults (3 replicas and a Redis started afresh for each row; "
                             "customers retry with their Idempotency-Key)",
             report.FAULT_COLUMNS, _one_local_redis),
    Scenario("metrics", lambda args, t: run_metrics_scenario(args),
             lambda args, t: "metrics (lua throughput with the Prometheus metrics on and off)",
             report.METRICS_COLUMNS, _own_processes),
    Scenario("baseline", lambda args, t: run_baseline_scenario(args),
             lambda args, t: f"baseline (one replica each, {args.baseline_concurrency} "
                             f"clients, {args.duration:g} s per round)",
             report.BASELINE_COLUMNS, _own_processes),
    Scenario("wait", lambda args, t: run_wait_scenario(args),
             lambda args, t: f"wait (REDIS_WAIT_REPLICAS 0 vs 1 on a master with a replica and "
                             f"3 Sentinels; {args.replicas} replicas each, "
                             f"{args.duration:g} s per round)",
             report.WAIT_COLUMNS, _own_processes),
    Scenario("flashsale", run_flashsale_scenario, lambda args, t: flashsale.title(),
             report.FLASHSALE_COLUMNS, _redis_url_given),
    Scenario("redis", lambda args, t: run_redis_scenario(args, t.redis_url),
             lambda args, t: "redis (no HTTP: OrderService driven by 3 processes x 8 threads)",
             report.REDIS_COLUMNS, _redis_url_given),
)}
NAMES = ("seed", *SCENARIOS)


def run_scenarios(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    """Every scenario in ``args.scenarios``, in the table's order; then, on local replicas,
    what they and Redis hold in memory."""
    results: dict[str, Any] = {}
    if "seed" in args.scenarios:
        results["seed"] = run_seed_scenario(target.urls, target.local)
        print(results["seed"]["text"] + "\n", flush=True)
    if target.local is not None:  # after the seed: it restarts the replicas
        target.probe = CostProbe([r.process.pid for r in target.local.replicas],
                                 target.local.redis_client())
    elif target.redis_url:
        target.probe = CostProbe(redis=admin_client(target.redis_url, args.redis == "cluster"))
    for scenario in SCENARIOS.values():
        if scenario.name not in args.scenarios:
            continue
        skipped = scenario.skipped(args, target)
        if skipped:
            print(f"{scenario.name}: skipped, {skipped}\n")
            continue
        results[scenario.name] = section = scenario.run(args, target)
        print(scenario.title(args, target))
        print(report.table(section["rows"], scenario.columns))
        for note in section.get("notes", []):
            print(note)
        print(flush=True)
    if target.local is not None:
        results["memory"] = memory_section(target.local)
    return results


def memory_section(local: LocalReplicas) -> dict[str, Any]:
    measured = memory(local)
    rss = ", ".join(f"{name} {mib} MiB" for name, mib in measured["rss_mib_per_replica"].items())
    text = (f"Resident memory per replica (gunicorn master + workers, after the run): {rss}."
            f" Redis memory per recorded order: {measured['redis_bytes_per_order']} bytes "
            f"(MEMORY USAGE of the order hash, mean over {measured['orders_measured']:,} "
            "lua orders; the per-SKU counters are shared by all of a SKU's orders).")
    print(f"memory: {text}\n")
    return {"data": measured, "notes": [text]}
