"""The benchmark's output: terminal tables, and in the output folder results.json, report.md
and PNG charts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

THROUGHPUT_COLUMNS = [
    ("strategy", "strategy"), ("concurrency", "conc"), ("skus", "SKUs"),
    ("replicas", "replicas"), ("orders_per_s", "orders/s"), ("requests_per_s", "answers/s"),
    ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"), ("max_ms", "max ms"),
    ("errors", "errors"), ("oversold", "oversold"),
    ("server_cpu_ms_per_order", "server CPU ms/order"),
    ("redis_cpu_us_per_order", "Redis CPU us/order"),
    ("redis_commands_per_order", "Redis cmds/order"), ("client_cpu_share", "client core"),
]
# throughput and spread: orders/s is the median round's; every round's beside it
ROUNDS_COLUMNS = [*THROUGHPUT_COLUMNS[:5], ("rounds_orders_per_s", "rounds"),
                  *THROUGHPUT_COLUMNS[5:]]
MASTERS_COLUMNS = [("masters", "masters"), *THROUGHPUT_COLUMNS]
METRICS_COLUMNS = [("metrics", "metrics"), ("round", "round"), *THROUGHPUT_COLUMNS]
WAIT_COLUMNS = [("wait_replicas", "WAIT"), ("round", "round"), *THROUGHPUT_COLUMNS]
BASELINE_COLUMNS = [
    ("contender", "contender"), ("round", "round"), ("orders_per_s", "orders/s"),
    ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("errors", "errors"),
    ("server_cpu_ms_per_order", "server CPU ms/order"),
    ("redis_cpu_us_per_order", "Redis CPU us/order"),
    ("redis_commands_per_order", "Redis cmds/order"), ("client_cpu_share", "client core"),
]
REDIS_COLUMNS = [
    ("strategy", "strategy"), ("processes", "processes"), ("threads", "threads"),
    ("orders_per_s", "orders/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
    ("failures", "failures"), ("redis_cpu_us_per_order", "Redis CPU us/order"),
    ("redis_commands_per_order", "Redis cmds/order"),
]
LOCK_COLUMNS = [
    ("lock", "lock"), ("acquisitions_per_s", "acq/s"), ("wait_p50_ms", "wait p50 ms"),
    ("wait_p99_ms", "wait p99 ms"), ("wait_max_ms", "wait max ms"), ("timeouts", "timeouts"),
    ("per_process", "per process"), ("fairness", "fairness"),
    ("client_cpu_us_per_acq", "clients' CPU us/acq"), ("redis_cpu_us_per_acq", "Redis CPU us/acq"),
    ("redis_commands_per_acq", "Redis cmds/acq"),
]

FAULT_COLUMNS = [
    ("scenario", "fault"), ("variant", "variant"), ("sent", "sent"),
    ("acknowledged", "acknowledged"), ("refused", "refused"), ("recorded", "recorded"),
    ("oversold", "oversold"), ("lost", "lost"), ("phantom", "phantom"),
    ("unresolved", "unresolved"), ("resolved", "resolved by key"), ("verdict", "verdict"),
]
FLASHSALE_COLUMNS = [
    ("strategy", "strategy"), ("orders", "orders"), ("held", "held"), ("sold", "sold"),
    ("reserved", "reserved"), ("expired", "expired"), ("cancelled", "cancelled"),
    ("limit_refusals", "limit 409"), ("out_of_stock", "sold out 409"),
    ("late_payments", "late pays"), ("other", "other"), ("server_errors", "5xx"),
    ("orders_per_s", "orders/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"), ("max_ms", "max ms"), ("invariant", "invariant"),
]


def machine(redis_version: str) -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "redis": redis_version}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict], columns: list[tuple[str, str]], markdown: bool = False) -> str:
    header = [title for _, title in columns]
    body = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*cells) for cells in [header, *body])


COLORS = {"lua": "tab:blue", "lock": "tab:orange", "none": "tab:gray"}


def _series(row: dict) -> tuple[str, int]:
    """A line of a throughput chart: one per strategy (and per cluster size, if any)."""
    return row["strategy"], row.get("masters", 0)


def _label(row: dict) -> str:
    strategy, masters = _series(row)
    return f"{strategy}, {masters} master{'s' * (masters > 1)}" if masters else strategy


def chart_throughput(rows: list[dict], path: Path, title: str, x: str = "concurrency") -> None:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for strategy, masters in sorted({_series(row) for row in rows}):
        points = sorted((row[x], row["orders_per_s"])
                        for row in rows if _series(row) == (strategy, masters))
        label = _label({"strategy": strategy, "masters": masters})
        axis.plot(*zip(*points, strict=True), marker="o", label=label,
                  color=COLORS.get(strategy), linestyle="--" if masters == 1 else "-")
    if x == "concurrency":
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
    else:
        axis.set_xticks(sorted({row[x] for row in rows}))
        axis.set_xlabel("replicas")
    axis.set_ylabel("orders created per second")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def chart_latency(rows: list[dict], path: Path, title: str) -> None:
    concurrency = max(row["concurrency"] for row in rows)
    chosen = [row for row in rows if row["concurrency"] == concurrency]
    figure, axis = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / max(1, len(chosen))
    marks = ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
    for index, row in enumerate(chosen):
        axis.bar([m + index * width for m in range(len(marks))],
                 [row[mark] for mark in marks], width, label=_label(row),
                 color=COLORS.get(row["strategy"]))
    axis.set_xticks([m + width * (len(chosen) - 1) / 2 for m in range(len(marks))],
                    ["p50", "p95", "p99", "max"])
    axis.set_yscale("log")
    axis.set_ylabel("latency (ms, log scale)")
    axis.set_title(f"{title}, {concurrency} concurrent clients")
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(out: Path, results: dict[str, Any]) -> list[Path]:
    """results.json, report.md and the charts; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    written[0].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = ["# Benchmark report", "", f"Run {results['started']}, "
             f"command `{results['command']}`.", "", "## Machine and parameters", ""]
    lines += [f"- {key}: {value}" for key, value in results["machine"].items()]
    lines += [f"- {key}: {value}" for key, value in results["parameters"].items()]
    for name, section in results["scenarios"].items():
        lines += ["", f"## {name}", ""]
        if section.get("text"):
            lines += ["```", section["text"], "```"]
        if section.get("rows"):
            columns = {"throughput": ROUNDS_COLUMNS, "spread": ROUNDS_COLUMNS,
                       "lock": LOCK_COLUMNS, "faults": FAULT_COLUMNS,
                       "masters": MASTERS_COLUMNS, "baseline": BASELINE_COLUMNS,
                       "redis": REDIS_COLUMNS,
                       "metrics": METRICS_COLUMNS,
                       "wait": WAIT_COLUMNS,
                       "flashsale": FLASHSALE_COLUMNS}.get(name, THROUGHPUT_COLUMNS)
            lines.append(table(section["rows"], columns, markdown=True))
        for note in section.get("notes", []):
            lines += ["", note]
        if name in ("throughput", "spread", "masters", "replicas") and section.get("rows"):
            chart = out / f"{name}.png"
            skus = section["rows"][0]["skus"]
            load = "one hot SKU" if skus == 1 else f"{skus} SKUs"
            if name == "replicas":
                chart_throughput(section["rows"], chart, f"{load}, 32 clients: orders/s by "
                                 "replicas", x="replicas")
            else:
                if name == "masters":
                    most = max(row["masters"] for row in section["rows"])
                    load += f", Redis Cluster of 1 vs {most} masters"
                chart_throughput(section["rows"], chart, f"{load}: orders created per second")
                latency = out / f"{name}-latency.png"
                chart_latency(section["rows"], latency, f"{load}: latency")
                written.append(latency)
                lines += ["", f"![{name} latency]({latency.name})"]
            written.append(chart)
            lines += ["", f"![{name}]({chart.name})"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(report)
    return written
