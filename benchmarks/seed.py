"""The seed scenario's table: the proof of concept's per-replica counts for one run of the
original experiment (harness/experiment.py), and whether the books check out.
"""

from __future__ import annotations

from harness.experiment import STOCK, SeedRun


def format_table(run: SeedRun) -> str:
    lines = [f"strategy {run.strategy}: stock {STOCK}, {len(run.results)} orders at once",
             f"  {'replica':<14}{'created':>9}{'out of stock':>14}{'other':>7}"]
    for replica, counts in run.per_replica().items():
        other = sum(n for status, n in counts.items() if status not in (201, 409))
        lines.append(f"  {replica:<14}{counts[201]:>9}{counts[409]:>14}{other:>7}")
    other = len(run.results) - run.created - run.out_of_stock
    lines.append(f"  {'total':<14}{run.created:>9}{run.out_of_stock:>14}{other:>7}")
    slowest = max(r.latency_s for r in run.results)
    lines.append(f"  stock left {run.stock_after}, sold {run.sold_after}; all {len(run.results)} "
                 f"answered in {run.span_s * 1000:.0f} ms (slowest {slowest * 1000:.0f} ms)")
    failures = run.failures()
    lines.append("  check: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    return "\n".join(lines)
