"""Smoke test of the benchmark: every scenario at tiny sizes, and a report consistent with Redis.

Timing targets belong to the benchmark's report, not to this test: it checks that the files
exist and that the numbers in them agree with what Redis holds.
"""

from __future__ import annotations

import json
from statistics import median

import pytest
import redis

from benchmarks.__main__ import main
from benchmarks.throughput import LevelResult, combine_rounds
from harness.replicas import LocalReplicas
from service.keys import SkuKeys

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with LocalReplicas(replicas=2, env={"ENABLE_UNSAFE_STRATEGY": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def report(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(["--url", ",".join(cluster.urls), "--redis-url", cluster.redis_url,
                 "--scenario", "seed,throughput,spread,lock", "--duration", "0.4",
                 "--concurrency", "1,4", "--rounds", "2", "--spread-skus", "3",
                 "--lock-duration", "0.5", "--lock-rounds", "2", "--out", str(out)])
    return code, out, json.loads((out / "results.json").read_text())


def test_files_are_written(report):
    code, out, results = report
    assert code == 0
    for name in ["report.md", "throughput.png", "throughput-latency.png", "spread.png"]:
        assert (out / name).stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "## throughput" in text and "## lock" in text and "cores" in text
    assert set(results["scenarios"]) >= {"seed", "throughput", "spread", "lock", "targets"}


def test_seed_matches_the_original(report):
    runs = {run["strategy"]: run for run in report[2]["scenarios"]["seed"]["runs"]}
    for strategy in ("lua", "lock"):
        assert (runs[strategy]["created"], runs[strategy]["out_of_stock"]) == (10, 30)
        assert runs[strategy]["failures"] == []


def sku_books(client, scenario, row):
    """(stock, sold) summed over the SKUs a level used, read from Redis itself."""
    prefix = f"{scenario}-{row['strategy']}-c{row['concurrency']}-"
    stock = sold = 0
    tags = {key.split("}")[0][1:] for key in client.scan_iter(f"{{{prefix}*}}:stock")}
    for sku in tags:
        keys = SkuKeys(sku)
        stock += int(client.get(keys.stock) or 0)
        sold += int(client.get(keys.sold) or 0)
    return len(tags), stock, sold


@pytest.mark.parametrize("scenario", ["throughput", "spread"])
def test_level_numbers_agree_with_redis(report, cluster, scenario):
    client = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    for row in report[2]["scenarios"][scenario]["rows"]:
        # Each round of a level has fresh SKUs; the row's books add up every round's.
        assert len(row["rounds_orders_per_s"]) == 2
        assert row["orders_per_s"] == min(row["rounds_orders_per_s"])  # the lower median
        skus, stock, sold = sku_books(client, scenario, row)
        assert skus == row["skus"] * 2
        assert (stock, sold) == (row["stock_after"], row["sold_after"])
        assert sold == row["created"] and row["problems"] == []
        assert row["sent"] == row["created"] + row["out_of_stock"] + sum(row["errors"].values())
        if row["strategy"] != "none":
            assert row["oversold"] == 0


def test_lock_benchmark_counts_every_contender(report):
    rows = report[2]["scenarios"]["lock"]["rows"]
    assert [row["lock"] for row in rows][0] == "FencedLock" and len(rows) == 4
    for row in rows:
        assert row["acquisitions"] == sum(row["per_process"]) > 0
        assert len(row["rounds_acquisitions_per_s"]) == 2
        assert row["wait_p50_ms"] <= row["wait_p99_ms"] <= row["wait_max_ms"]


def test_replicas_scenario_starts_its_own_clusters(tmp_path):
    code = main(["--scenario", "replicas", "--replicas", "2", "--duration", "0.3",
                 "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["scenarios"]["replicas"]["rows"]
    assert code == 0 and sorted({row["replicas"] for row in rows}) == [1, 2]
    assert all(row["created"] > 0 and row["oversold"] == 0 for row in rows)
    assert (tmp_path / "replicas.png").stat().st_size > 0
    assert results["scenarios"]["memory"]


def test_faults_scenario_reports_every_variant(tmp_path):
    code = main(["--scenario", "faults", "--faults", "kill", "--fault-scale", "0.2",
                 "--replicas", "1", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["scenarios"]["faults"]["rows"]
    assert code == 0
    assert [row["variant"] for row in rows] == ["lua", "lock", "none (no lock)"]
    for row in rows:
        assert row["sent"] == 36 and row["acknowledged"] + row["refused"] == row["sent"]
    verdicts = [c["verdict"] for c in results["targets"] if c["target"].startswith("faults")]
    # The unsafe control's failing is asserted at a larger size in test_faults.py.
    assert verdicts[0] == "met" and verdicts[1] in ("met", "missed")
    assert "| kill | lock |" in (tmp_path / "report.md").read_text()


def test_cluster_run_and_masters_scenario(tmp_path):
    """--redis cluster: the seed and lock scenarios on a local 3-master Redis Cluster, and the
    spread scenario on 1 master vs 3."""
    code = main(["--redis", "cluster", "--scenario", "seed,masters,lock", "--replicas", "2",
                 "--strategies", "lua,lock", "--concurrency", "4", "--duration", "0.3",
                 "--spread-skus", "6", "--lock-duration", "0.5", "--lock-rounds", "1",
                 "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0 and results["parameters"]["redis"] == "Redis Cluster, 3 masters"
    runs = {run["strategy"]: run for run in results["scenarios"]["seed"]["runs"]}
    for run in runs.values():
        assert (run["created"], run["out_of_stock"], run["failures"]) == (10, 30, []), run
    rows = results["scenarios"]["masters"]["rows"]
    assert sorted({(row["masters"], row["strategy"]) for row in rows}) == [
        (1, "lock"), (1, "lua"), (3, "lock"), (3, "lua")]
    for row in rows:
        assert row["created"] > 0 and row["oversold"] == 0 and row["problems"] == [], row
    for row in results["scenarios"]["lock"]["rows"]:
        assert row["acquisitions"] > 0, row
    assert (tmp_path / "masters.png").stat().st_size > 0


def test_an_unready_target_is_refused(tmp_path):
    from harness.redis_server import free_port

    code = main(["--url", f"http://127.0.0.1:{free_port()}", "--scenario", "seed",
                 "--wait-ready", "1", "--out", str(tmp_path)])
    assert code == 2 and not (tmp_path / "results.json").exists()


def test_baseline_and_redis_scenarios(tmp_path):
    """The service beside the ten-line route (four contenders, one round), and each
    strategy's ceiling without HTTP: every contender sells, the costs are there."""
    code = main(["--scenario", "baseline,redis", "--replicas", "1", "--duration", "0.5",
                 "--baseline-rounds", "1", "--baseline-concurrency", "4",
                 "--strategies", "lua,lock", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0
    baseline = results["scenarios"]["baseline"]
    assert [row["contender"] for row in baseline["rows"]] == [
        "service", "baseline, same settings", "baseline, plain gunicorn", "hand-written peer"]
    for row in baseline["rows"]:
        assert row["orders_per_s"] > 0 and row["errors"] == 0, row
        assert row["server_cpu_ms_per_order"] > 0 and row["redis_commands_per_order"] > 0, row
    assert baseline["summary"]["service_vs_baseline"] > 0
    ceiling = {row["strategy"]: row for row in results["scenarios"]["redis"]["rows"]}
    assert set(ceiling) == {"lua", "lock"}
    for row in ceiling.values():
        assert row["orders_per_s"] > 0 and row["failures"] == 0, row
    verdicts = {c["target"]: c["verdict"] for c in results["targets"]}
    assert all(verdicts[t] in ("met", "missed") for t in verdicts if "baseline route" in t
               or "hand-written peer" in t)


@pytest.mark.slow
def test_benchmark_measures_the_cost_of_the_metrics(tmp_path):
    code = main(["--scenario", "metrics", "--replicas", "1", "--duration", "0.3",
                 "--metrics-rounds", "2", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    section = results["scenarios"]["metrics"]
    rows, summary = section["rows"], section["summary"]
    assert code == 0
    assert [(row["metrics"], row["round"]) for row in rows] == [
        ("on", 1), ("off", 1), ("off", 2), ("on", 2)]
    assert all(row["strategy"] == "lua" and row["concurrency"] == 32 and row["created"] > 0
               and row["oversold"] == 0 and not row["problems"] for row in rows)
    on = median([row["orders_per_s"] for row in rows if row["metrics"] == "on"])
    off = median([row["orders_per_s"] for row in rows if row["metrics"] == "off"])
    assert summary["on_orders_per_s"] == round(on, 1)
    assert summary["off_orders_per_s"] == round(off, 1)
    assert summary["cost_percent"] == round((off - on) / off * 100, 2)
    # Each set's own server CPU per order, beside its rate.
    assert all(row["server_cpu_ms_per_order"] > 0 for row in rows)
    assert [summary[f"{s}_server_cpu_ms_per_order"] for s in ("on", "off")] == [
        median(row["server_cpu_ms_per_order"] for row in rows if row["metrics"] == s)
        for s in ("on", "off")]
    # The replicas with metrics on counted every order they created, and only those.
    assert summary["counted_by_metrics"] == summary["created_with_metrics"] > 0
    assert 0 < summary["recording_us_per_order"] < 1000
    target = next(t for t in results["targets"] if t["target"].startswith("metrics cost"))
    assert target["verdict"] == ("met" if summary["cost_percent"] < 5 else "missed")
    assert "| on | 1 | lua | 32 |" in (tmp_path / "report.md").read_text()


def test_the_cost_probe_reads_every_master_of_a_cluster(redis_cluster_nodes):
    """Redis commands per order on a Redis Cluster: the probe asks every master, not the one
    node a cluster client sends INFO to by default (which read ~0 for a SKU elsewhere)."""
    from benchmarks.cost import CostProbe

    client = redis_cluster_nodes.client()
    probe = CostProbe(redis=client)
    probe.start()
    keys = [f"{{probe-{i}}}:x" for i in range(30)]  # hash tags spread over the 3 masters
    assert len({redis_cluster_nodes.server_for(key).port for key in keys}) == 3
    for key in keys:
        client.set(key, 1)
    costs = probe.stop(orders=len(keys), answers=len(keys))
    assert costs["redis_commands_per_order"] >= 1.0, costs


def test_flashsale_scenario_reports_every_strategy(cluster, tmp_path, monkeypatch):
    """A small flash sale (40 customers, 10 in stock, a limit of 2, holds of 1 s) per
    strategy: every row has the table's columns and adds up, and lua and lock keep the
    invariant (the none control may or may not break it at this size: it is not failed)."""
    from benchmarks import flashsale
    from benchmarks.report import FLASHSALE_COLUMNS

    sale = flashsale.Sale(customers=40, stock=10, hold_s=1, arrival_s=0.5, retries=2,
                          retry_pause_s=0.2, think_s=(0.05, 0.2), max_s=5.0)
    monkeypatch.setattr(flashsale, "SALE", sale)
    code = main(["--url", ",".join(cluster.urls), "--redis-url", cluster.redis_url,
                 "--scenario", "flashsale", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["strategy"]: row for row in results["scenarios"]["flashsale"]["rows"]}
    assert code == 0 and set(rows) == {"lua", "lock", "none"}
    for strategy, row in rows.items():
        assert {key for key, _ in FLASHSALE_COLUMNS} <= set(row), row
        assert row["orders"] == row["requests"]["order"] > 0, row
        if strategy != "none":
            assert (row["invariant"], row["violations"]) == ("ok", []), row
            assert row["stock_left"] + row["reserved"] + row["sold"] == sale.stock, row
            assert row["reserved"] == 0 and row["server_errors"] == 0, row
            assert row["held"] == row["sold"] + row["expired"] + row["cancelled"], row
            assert row["out_of_stock"] > 0 and row["sold"] > 0, row
    assert "| lua |" in (tmp_path / "report.md").read_text()


def test_a_flashsale_violation_fails_the_run_but_not_the_controls():
    from benchmarks.__main__ import failed

    def sale(strategy, violations):
        return {"flashsale": {"rows": [{"strategy": strategy, "violations": violations}]}}

    assert not failed(sale("lua", []))
    assert not failed(sale("none", ["oversold"]))
    assert failed(sale("lock", ["oversold"])) and failed(sale("lua", ["oversold"]))


def test_a_level_run_in_rounds_keeps_every_rounds_books():
    """The row takes the median round's pace, and every round's errors and oversold: an
    oversell in a round that is not the median one still shows."""
    def level(rate, oversold, errors):
        return LevelResult("throughput", "none", 8, 1, 3, 3.0, sent=100, created=90,
                           out_of_stock=10 - sum(errors.values()), requests_per_s=rate,
                           orders_per_s=rate, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, max_ms=4.0,
                           errors=errors, oversold=oversold, stock_after=5, sold_after=90,
                           problems=[f"at {rate}"] * bool(oversold))

    row = combine_rounds([level(300.0, 0, {}), level(100.0, 7, {"503": 2}),
                          level(200.0, 0, {"503": 1})])
    assert (row.orders_per_s, row.rounds_orders_per_s) == (200.0, [300.0, 100.0, 200.0])
    assert (row.oversold, row.errors, row.problems) == (7, {"503": 3}, ["at 100.0"])
    assert (row.sent, row.created, row.sold_after) == (300, 270, 270)
