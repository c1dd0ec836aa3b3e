"""The ``baseline`` scenario: the service beside what the HTTP stack alone can do.

Three contenders, each one gunicorn replica started afresh on the same Redis, driven by the
same load client at the same concurrency, in alternating rounds (so a slow spell of a shared
machine falls on all of them):

- ``service``: the service as shipped (``gunicorn -c gunicorn.conf.py 'service:create_app()'``
  with its default workers and worker class), strategy lua;
- ``baseline, same settings``: the ten-line route of ``baseline_app.py`` under the same
  gunicorn.conf.py: the service's overhead is measured against this one;
- ``baseline, plain gunicorn``: the same route under ``gunicorn -k gthread -w 2 --threads 16``
  and no configuration file, with this project's packages;
- ``hand-written peer``: the same again, as a new user would first run it, after
  ``pip install flask redis gunicorn``: without the optional C accelerators this project pins
  (redis-py's hiredis parser, gunicorn's gunicorn_h1c HTTP parser), which the libraries use
  whenever they are installed. The benchmark hides both from that replica (``HIDE_ACCELERATORS``)
  rather than building another virtualenv.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from statistics import median
from typing import Any

from harness.load import closed_loop, percentile
from harness.redis_server import RedisServer
from harness.replicas import GUNICORN_ARGS, LocalReplicas
from service.keys import SkuKeys

from .cost import CostProbe
from .progress import Progress

BASELINE_APP = "benchmarks.baseline_app:app"
PLAIN_GUNICORN = ("-k", "gthread", "-w", "2", "--threads", "16")
STOCK = 10_000_000
# After a replica reports ready, before the load: plain gunicorn cannot say when all its workers
# have loaded the app, and a load that starts earlier puts every keep-alive connection on the
# first worker. The same pause for every contender.
SETTLE_S = 1.0
CONTENDERS = {  # name -> what the replica runs
    "service": GUNICORN_ARGS,
    "baseline, same settings": ("-c", "gunicorn.conf.py", BASELINE_APP),
    "baseline, plain gunicorn": (*PLAIN_GUNICORN, BASELINE_APP),
    "hand-written peer": (*PLAIN_GUNICORN, BASELINE_APP),
}
SERVICE, SAME_SETTINGS, PLAIN, PEER = CONTENDERS
# Put first on the peer's PYTHONPATH: as if the optional packages were not installed.
HIDE_ACCELERATORS = """import sys
for name in ("hiredis", "gunicorn_h1c"):
    sys.modules[name] = None  # import fails: redis-py and gunicorn fall back to pure Python
"""


def run_contender(name: str, redis_server: RedisServer, concurrency: int, duration_s: float,
                  round_number: int) -> dict[str, Any]:
    sku = f"baseline-{round_number}-{list(CONTENDERS).index(name)}"
    with redis_server.admin() as admin:
        admin.set(SkuKeys(sku).stock, STOCK)
    env = {}
    if name == PEER:
        hidden = Path(redis_server.directory) / "plain-packages"
        hidden.mkdir(exist_ok=True)
        (hidden / "sitecustomize.py").write_text(HIDE_ACCELERATORS)
        env["PYTHONPATH"] = str(hidden)
    with LocalReplicas(replicas=1, redis_url=redis_server.url, workers=None, env=env,
                      gunicorn_args=CONTENDERS[name]) as running, redis_server.admin() as admin:
        time.sleep(SETTLE_S)
        probe = CostProbe([r.process.pid for r in running.replicas], admin)
        # The service's default strategy is lua: the same request line for every contender.
        run = asyncio.run(closed_loop(running.urls, concurrency, duration_s, "/orders",
                                      body={"sku": sku}, on_start=probe.start))
        created = sum(r.status == 201 for r in run.results)
        costs = probe.stop(created, len(run.results))
    latencies = sorted(r.latency_s * 1000 for r in run.results)
    return {"contender": name, "round": round_number, "concurrency": concurrency,
            "orders_per_s": round(created / run.elapsed_s, 1),
            "errors": len(run.results) - created,
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2), **costs}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per contender, and the two ratios the targets are about."""
    medians = {}
    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        medians[name] = {
            "orders_per_s": median(r["orders_per_s"] for r in mine),
            "server_cpu_ms_per_order": median(r["server_cpu_ms_per_order"] for r in mine),
            "client_saturated_rounds": sum(r["client_saturated"] for r in mine),
        }
    service, same, plain, peer = (medians[n] for n in (SERVICE, SAME_SETTINGS, PLAIN, PEER))
    return {
        "medians": medians,
        "service_vs_baseline": round(service["orders_per_s"] / same["orders_per_s"], 3),
        "service_cpu_vs_baseline": round(
            service["server_cpu_ms_per_order"] / same["server_cpu_ms_per_order"], 3),
        "service_vs_plain": round(service["orders_per_s"] / plain["orders_per_s"], 3),
        "service_cpu_vs_plain": round(
            service["server_cpu_ms_per_order"] / plain["server_cpu_ms_per_order"], 3),
        "service_vs_peer": round(service["orders_per_s"] / peer["orders_per_s"], 3),
        "service_cpu_vs_peer": round(
            service["server_cpu_ms_per_order"] / peer["server_cpu_ms_per_order"], 3),
    }


def run_baseline_scenario(args: argparse.Namespace) -> dict[str, Any]:
    progress = Progress(len(CONTENDERS) * args.baseline_rounds, "baseline")
    rows = []
    with RedisServer() as redis_server:
        for round_number in range(1, args.baseline_rounds + 1):
            for name in CONTENDERS:
                progress.level(f"round {round_number}: {name}")
                rows.append(run_contender(name, redis_server, args.baseline_concurrency,
                                          args.duration, round_number))
                progress.advance()
    progress.close()
    summary = summarize(rows)
    overhead = 1 - summary["service_vs_baseline"]
    notes = [
        f"Service overhead: {overhead:.0%} of the baseline route's orders/s under the same "
        f"gunicorn settings (service {summary['service_vs_baseline']:.2f} x baseline; CPU "
        f"per order {summary['service_cpu_vs_baseline']:.2f} x), medians of "
        f"{args.baseline_rounds} alternating rounds at {args.baseline_concurrency} clients.",
        f"Against the hand-written peer (plain gunicorn -k gthread -w 2 --threads 16, "
        f"flask + redis + gunicorn without their C accelerators): the service as shipped "
        f"makes {summary['service_vs_peer']:.2f} x its orders/s at "
        f"{summary['service_cpu_vs_peer']:.2f} x its CPU per order. Against the same route "
        f"under plain gunicorn with this project's packages: "
        f"{summary['service_vs_plain']:.2f} x orders/s, "
        f"{summary['service_cpu_vs_plain']:.2f} x CPU per order.",
    ]
    saturated = sum(m["client_saturated_rounds"] for m in summary["medians"].values())
    if saturated:
        notes.append(f"The load client used >= 90 % of its core in {saturated} rounds: there "
                     "the client, not the server, may have set the pace (compare CPU per "
                     "order, which does not depend on it).")
    return {"rows": rows, "summary": summary, "notes": notes}
