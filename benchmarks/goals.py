"""The issue's targets, checked against what a run measured (met, missed, or not run)."""

from __future__ import annotations

from typing import Any

SEED_SPAN_MS = {"lua": 100, "lock": 200}
LUA_ORDERS_PER_S = 2500
LOCK_ORDERS_PER_S = 800
LOCK_P99_MS = 100
LOCK_CLIENTS = 8
SERVICE_VS_BASELINE = 0.90
SERVICE_VS_PLAIN = 1.2
FENCED_P99_SHARE = 0.2
METRICS_COST_PERCENT = 5.0


def _best(rows: list[dict], strategy: str, ok=lambda row: True) -> dict | None:
    candidates = [r for r in rows if r["strategy"] == strategy and r["skus"] == 1 and ok(r)]
    return max(candidates, key=lambda r: r["orders_per_s"], default=None)


def check(scenarios: dict[str, Any]) -> list[dict[str, str]]:
    checks = []

    def add(target: str, measured: str, met: bool | None) -> None:
        verdict = "not run" if met is None else ("met" if met else "missed")
        checks.append({"target": target, "measured": measured, "verdict": verdict})

    for run in scenarios.get("seed", {}).get("runs", []):
        limit = SEED_SPAN_MS.get(run["strategy"])
        if limit is None:
            continue
        add(f"seed {run['strategy']}: 10 created, 30 out of stock, all in {limit} ms",
            f"{run['created']} / {run['out_of_stock']}, {run['span_ms']:.0f} ms",
            run["created"] == 10 and run["out_of_stock"] == 30 and run["span_ms"] <= limit)

    rows = scenarios.get("throughput", {}).get("rows", [])
    lua = _best(rows, "lua")
    add(f"throughput lua >= {LUA_ORDERS_PER_S} orders/s",
        f"{lua['orders_per_s']:,.0f} orders/s at {lua['concurrency']} clients" if lua else "-",
        lua["orders_per_s"] >= LUA_ORDERS_PER_S if lua else None)
    lock = _best(rows, "lock", lambda r: r["concurrency"] == LOCK_CLIENTS)
    add(f"throughput lock >= {LOCK_ORDERS_PER_S} orders/s with p99 <= {LOCK_P99_MS} ms at "
        f"{LOCK_CLIENTS} clients",
        f"{lock['orders_per_s']:,.0f} orders/s, p99 {lock['p99_ms']:.0f} ms at "
        f"{lock['concurrency']} clients" if lock else "-",
        (lock["orders_per_s"] >= LOCK_ORDERS_PER_S and lock["p99_ms"] <= LOCK_P99_MS)
        if lock else None)
    safe = [r for r in rows if r["strategy"] in ("lua", "lock")]
    add("oversold 0 for lua and lock", f"{sum(r['oversold'] for r in safe)}" if safe else "-",
        all(r["oversold"] == 0 and not r["problems"] for r in safe) if safe else None)
    unsafe = [r for r in rows if r["strategy"] == "none"]
    add("the none control oversells", f"{sum(r['oversold'] for r in unsafe)} oversold"
        if unsafe else "-", any(r["oversold"] > 0 for r in unsafe) if unsafe else None)

    locks = {r["lock"]: r for r in scenarios.get("lock", {}).get("rows", [])}
    fenced = locks.get("FencedLock")
    default = next((r for name, r in locks.items() if "default" in name), None)
    if fenced and default:
        add("FencedLock acquisitions/s >= redis-py Lock (defaults)",
            f"{fenced['acquisitions_per_s']:,.0f} vs {default['acquisitions_per_s']:,.0f}",
            fenced["acquisitions_per_s"] >= default["acquisitions_per_s"])
        add("FencedLock p99 wait <= 1/5 of redis-py Lock's",
            f"{fenced['wait_p99_ms']:.1f} ms vs {default['wait_p99_ms']:.1f} ms",
            fenced["wait_p99_ms"] <= FENCED_P99_SHARE * default["wait_p99_ms"])
    else:
        add("FencedLock vs redis-py Lock", "-", None)
    faults = scenarios.get("faults", {}).get("rows", [])
    safe = [r for r in faults if r["safe"]]
    add("faults: lua and lock never oversell, lose an order, or leave one unresolved",
        f"{sum(r['as_expected'] for r in safe)} of {len(safe)} runs hold" if safe else "-",
        all(r["as_expected"] for r in safe) if safe else None)
    unsafe = [r for r in faults if not r["safe"]]
    add("faults: every unsafe variant fails the same check, as expected",
        f"{sum(r['as_expected'] for r in unsafe)} of {len(unsafe)} fail" if unsafe else "-",
        all(r["as_expected"] for r in unsafe) if unsafe else None)
    baseline = scenarios.get("baseline", {}).get("summary")
    add(f"service (lua) >= {SERVICE_VS_BASELINE:.2f} x the baseline route, same gunicorn "
        "settings, same run",
        f"{baseline['service_vs_baseline']:.2f} x orders/s (CPU per order "
        f"{baseline['service_cpu_vs_baseline']:.2f} x)" if baseline else "-",
        baseline["service_vs_baseline"] >= SERVICE_VS_BASELINE if baseline else None)
    add(f"service as shipped >= {SERVICE_VS_PLAIN:.1f} x the hand-written peer (plain gunicorn, "
        "plain packages)",
        f"{baseline['service_vs_peer']:.2f} x orders/s (CPU per order "
        f"{baseline['service_cpu_vs_peer']:.2f} x)" if baseline else "-",
        baseline["service_vs_peer"] >= SERVICE_VS_PLAIN if baseline else None)
    summary = scenarios.get("metrics", {}).get("summary")
    add(f"metrics cost on lua throughput < {METRICS_COST_PERCENT:g} %",
        f"{summary['cost_percent']:.1f} % ({summary['on_orders_per_s']:,.0f} vs "
        f"{summary['off_orders_per_s']:,.0f} orders/s, median of {summary['rounds']} rounds)"
        if summary else "-",
        summary["cost_percent"] < METRICS_COST_PERCENT if summary else None)
    return checks
