"""Prometheus metrics at GET /metrics, against a real Redis (and real gunicorn workers).

The metrics live in the process (the test process here, one per worker under gunicorn), so
every test compares a scrape after its requests with one before: deltas, exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis
from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from harness.http import http_json
from harness.load import run_burst
from harness.redis_server import free_port
from harness.replicas import LocalReplicas
from service import metrics
from service.keys import SkuKeys
from service.lock import FencedLock
from service.watchdog import WATCHDOG

from .deploy_checks import gunicorn_hooks
from .waiting import wait_for

SKU = "metered"
INF = "+Inf"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, for every sample of an exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client, query: str = "") -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics" + query)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: dict, name: str, **labels: object) -> float:
    """A sample's value; 0 for a series not there yet (a counter that never moved)."""
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    return samples.get(key, 0.0)


class Delta:
    """What changed between two scrapes."""

    def __init__(self, before: dict, after: dict) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: object) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def measure(client, action) -> Delta:
    before = scrape(client)
    action()
    return Delta(before, scrape(client))


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def order(client, strategy: str, sku: str = SKU, **headers: str):
    return client.post(f"/orders?strategy={strategy}", json={"sku": sku}, headers=headers)


# --- Orders by strategy and outcome, and their latency ---------------------------------------


def test_orders_are_counted_by_strategy_and_outcome(client):
    def orders():
        client.put(f"/stock/{SKU}", json={"quantity": 3})
        statuses = [order(client, "lua").status_code for _ in range(5)]
        assert statuses == [201, 201, 201, 409, 409]
        client.put(f"/stock/{SKU}", json={"quantity": 2})
        statuses = [order(client, "lock").status_code for _ in range(3)]
        assert statuses == [201, 201, 409]
        assert order(client, "lua", **{"Idempotency-Key": "k1"}).status_code == 409
        reused = client.post("/orders?strategy=lua", json={"sku": SKU, "quantity": 2},
                             headers={"Idempotency-Key": "k1"})
        assert reused.get_json()["type"] == "/problems/idempotency-key-reused"
        # A request refused before it reaches the domain is no order.
        assert client.post("/orders", json={"sku": SKU, "quantity": 0}).status_code == 422

    delta = measure(client, orders)
    assert delta("orders_total", strategy="lua", outcome="created") == 3
    assert delta("orders_total", strategy="lua", outcome="out-of-stock") == 3
    assert delta("orders_total", strategy="lua", outcome="idempotency-key-reused") == 1
    assert delta("orders_total", strategy="lock", outcome="created") == 2
    assert delta("orders_total", strategy="lock", outcome="out-of-stock") == 1
    assert delta("orders_total", strategy="lock", outcome="invalid-request") == 0
    assert delta("order_latency_seconds_count", strategy="lua") == 7
    assert delta("order_latency_seconds_count", strategy="lock") == 3
    assert delta("order_latency_seconds_bucket", strategy="lua", le=INF) == 7
    for strategy in ("lua", "lock"):
        assert 0 < delta("order_latency_seconds_sum", strategy=strategy) < 1


def test_latency_is_the_orders_own(make_app):
    """Lock orders held 150 ms between read and write land above the 100 ms bucket."""
    client = make_app(enable_unsafe_strategy=True, critical_section_delay_ms=150).test_client()
    client.put(f"/stock/{SKU}", json={"quantity": 10})
    delta = measure(client, lambda: [order(client, "lock") for _ in range(2)])
    assert delta("order_latency_seconds_count", strategy="lock") == 2
    assert delta("order_latency_seconds_bucket", strategy="lock", le=0.1) == 0
    assert delta("order_latency_seconds_bucket", strategy="lock", le=INF) == 2
    assert delta("order_latency_seconds_sum", strategy="lock") >= 0.3


# --- The lock: waits, timeouts, fencing refusals, lease renewals ------------------------------


def test_lock_wait_and_timeout(make_app, redis_client):
    client = make_app(lock_wait_ms=150).test_client()
    client.put(f"/stock/{SKU}", json={"quantity": 10})
    holder = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=10)

    def held_then_free():
        assert holder.acquire(blocking=False)
        refused = order(client, "lock")
        assert refused.status_code == 503
        assert refused.get_json()["type"] == "/problems/lock-timeout"
        holder.release()
        assert order(client, "lock").status_code == 201

    delta = measure(client, held_then_free)
    assert delta("order_lock_timeouts_total") == 1
    assert delta("orders_total", strategy="lock", outcome="lock-timeout") == 1
    assert delta("order_lock_wait_seconds_count") == 2  # the timed-out wait and the free one
    # The timed-out one waited its 150 ms; the free one about a round trip.
    assert delta("order_lock_wait_seconds_bucket", le=0.1) == 1
    assert delta("order_lock_wait_seconds_sum") >= 0.15
    assert delta("order_fencing_refusals_total") == 0


def test_fencing_refusal(make_app, redis_client):
    """A stock change while a lock order sits between its read and its write fences it out."""
    app = make_app(enable_unsafe_strategy=True, critical_section_delay_ms=300)
    client, admin = app.test_client(), app.test_client()
    admin.put(f"/stock/{SKU}", json={"quantity": 10})

    def fenced_out():
        answers = {}
        thread = threading.Thread(target=lambda: answers.update(slow=order(client, "lock")))
        thread.start()
        wait_for(lambda: redis_client.exists(SkuKeys(SKU).lock), "the order holds the lock")
        assert admin.put(f"/stock/{SKU}", json={"quantity": 5}).status_code == 200
        thread.join(10)
        assert answers["slow"].status_code == 503
        assert answers["slow"].get_json()["type"] == "/problems/lock-lost"

    delta = measure(admin, fenced_out)
    assert delta("order_fencing_refusals_total") == 1
    assert delta("orders_total", strategy="lock", outcome="lock-lost") == 1
    assert delta("order_lock_timeouts_total") == 0
    assert redis_client.get(SkuKeys(SKU).stock) == "5"  # the refused write changed nothing


def test_lease_renewals_while_a_slow_holder_works(make_app):
    """A 150 ms lease renewed every 50 ms through a 400 ms critical section."""
    client = make_app(enable_unsafe_strategy=True, critical_section_delay_ms=400,
                      lock_ttl_ms=150).test_client()
    client.put(f"/stock/{SKU}", json={"quantity": 10})
    delta = measure(client, lambda: order(client, "lock"))
    assert delta("orders_total", strategy="lock", outcome="created") == 1
    assert delta("order_lease_renewals_total", result="renewed") >= 3
    assert delta("order_lease_renewals_total", result="lost") == 0
    assert delta("order_lease_renewals_total", result="error") == 0


def test_a_lost_lease_is_counted_once(client, redis_client, caplog):
    lock = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=0.15, renew=True)

    def lose_it():
        assert lock.acquire(blocking=False)
        redis_client.delete(SkuKeys(SKU).lock)  # as if the lease had run out
        wait_for(lambda: "was lost before its holder finished" in caplog.text,
                 "the watchdog finds the lock gone")
        time.sleep(0.15)  # no renewal after that
        lock.forget()

    delta = measure(client, lose_it)
    assert delta("order_lease_renewals_total", result="lost") == 1


def test_a_renewal_redis_did_not_answer_is_an_error(client):
    class Unreachable:
        name, redis = "{metered}:lock", None

        def __init__(self):
            self.calls = 0

        def lua_reacquire(self, **_):
            self.calls += 1
            raise redis.ConnectionError("refused")

    lock = Unreachable()

    def fail_twice():
        handle = WATCHDOG.watch(lock, b"token", 30)  # renewals every 10 ms
        wait_for(lambda: lock.calls >= 2, "two renewal attempts")
        WATCHDOG.unwatch(handle)  # an error is not a loss (counted below): it is retried
        time.sleep(0.05)

    delta = measure(client, fail_twice)
    assert delta("order_lease_renewals_total", result="error") == lock.calls >= 2
    assert delta("order_lease_renewals_total", result="lost") == 0


# --- Redis errors ------------------------------------------------------------------------------


def test_redis_errors_are_counted_by_class(make_app, client):
    down = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()

    def fail():
        assert order(down, "lua").status_code == 503
        assert order(down, "lock").status_code == 503
        assert down.get(f"/stock/{SKU}").status_code == 503

    delta = measure(client, fail)
    assert delta("order_redis_errors_total", error="ConnectionError") == 3
    assert delta("orders_total", strategy="lua", outcome="unavailable") == 1
    assert delta("orders_total", strategy="lock", outcome="unavailable") == 1


# --- Stock per SKU, on request -----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_reservations_are_counted_by_event(client, strategy):
    def sale():
        client.put(f"/stock/{SKU}", json={"quantity": 5, "per_customer_limit": 1})
        held = [client.post(f"/orders?strategy={strategy}", json={
            "sku": SKU, "customer_id": f"c{n}", "hold_s": hold_s}).get_json()["order_id"]
            for n, hold_s in enumerate((60, 60, 60, 1))]
        for order_id, action in zip(held, ("confirm", "confirm", "cancel"), strict=False):
            assert client.post(f"/orders/{order_id}/{action}?strategy={strategy}") \
                .status_code == 200
        assert client.post(f"/orders/{held[0]}/confirm?strategy={strategy}").status_code == 200
        refused = client.post(f"/orders?strategy={strategy}", json={
            "sku": SKU, "customer_id": "c0"})
        assert refused.get_json()["type"] == "/problems/customer-limit"
        time.sleep(1.1)  # the last hold runs out; the next order gives its unit back
        assert client.post(f"/orders?strategy={strategy}", json={
            "sku": SKU, "customer_id": "c9"}).status_code == 201

    delta = measure(client, sale)
    counts = {event: delta("order_reservations_total", event=event)
              for event in ("made", "confirmed", "cancelled", "expired")}
    assert counts == {"made": 4, "confirmed": 2, "cancelled": 1, "expired": 1}
    assert delta("orders_total", strategy=strategy, outcome="customer-limit") == 1
    samples = scrape(client, f"?sku={SKU}")
    reserved = {dict(labels)["sku"]: v for (name, labels), v in samples.items()
                if name == "order_reserved"}
    assert reserved == {SKU: 0}


def test_stock_gauges_of_the_skus_asked_for(client):
    client.put("/stock/a", json={"quantity": 7})
    client.put("/stock/b.2", json={"quantity": 5})
    assert client.post("/orders", json={"sku": "b.2", "quantity": 2}).status_code == 201
    samples = scrape(client, "?sku=a&sku=b.2&sku=never-stocked&sku=a")
    stock = {dict(labels)["sku"]: v for (name, labels), v in samples.items()
             if name == "order_stock"}
    sold = {dict(labels)["sku"]: v for (name, labels), v in samples.items()
            if name == "order_sold"}
    assert stock == {"a": 7, "b.2": 3, "never-stocked": 0}
    assert sold == {"a": 0, "b.2": 2, "never-stocked": 0}
    assert value(samples, "order_stock_read_success") == 1
    plain = scrape(client)
    assert not [name for name, _ in plain if name.startswith(("order_stock", "order_sold"))]
    assert ("orders_total", (("outcome", "created"), ("strategy", "lua"))) in plain


@pytest.mark.parametrize("query", ["?sku=", "?sku=a%20b", "?sku=a&sku=%7Bx%7D",
                                   "?sku=" + "x" * 65,
                                   "?" + "&".join(f"sku=s{i}" for i in range(51))])
def test_bad_sku_parameters_are_refused(client, query):
    response = client.get("/metrics" + query)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.get_json()["type"] == "/problems/malformed-request"


def test_fifty_skus_is_the_most(client):
    samples = scrape(client, "?" + "&".join(f"sku=s{i}" for i in range(50)))
    assert len([name for name, _ in samples if name == "order_stock"]) == 50


def test_redis_down_at_scrape_keeps_the_counters(make_app):
    down = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").test_client()
    assert order(down, "lua").status_code == 503
    samples = scrape(down, "?sku=a")
    assert value(samples, "order_stock_read_success") == 0
    assert not [name for name, _ in samples if name in ("order_stock", "order_sold")]
    assert value(samples, "orders_total", strategy="lua", outcome="unavailable") >= 1


# --- Metrics off -------------------------------------------------------------------------------


def test_metrics_off_records_nothing_and_serves_no_metrics(make_app, redis_client):
    meter = make_app().test_client()  # on: the reference scrape
    before = scrape(meter)
    off = make_app(metrics_enabled=False, enable_unsafe_strategy=True, lock_wait_ms=100)
    assert not metrics.enabled()
    client = off.test_client()
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    client.put(f"/stock/{SKU}", json={"quantity": 1})
    assert [order(client, s).status_code for s in ("lua", "lua", "lock")] == [201, 409, 409]
    holder = FencedLock(redis_client, SkuKeys(SKU).lock, timeout=10)
    assert holder.acquire(blocking=False)
    assert order(client, "lock").status_code == 503  # a lock timeout
    holder.release()
    down = make_app(metrics_enabled=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert order(down.test_client(), "lua").status_code == 503  # a Redis error
    renewing = FencedLock(redis_client, "{metered}:other", timeout=0.06, renew=True)
    assert renewing.acquire(blocking=False)
    time.sleep(0.1)  # renewals every 20 ms
    renewing.release()
    after = scrape(make_app().test_client())
    moved = {key: after.get(key, 0) - before.get(key, 0)
             for key in after if key[0].startswith("order") and not key[0].endswith("_created")}
    assert {key: d for key, d in moved.items() if d} == {}


# --- Multiprocess mode under gunicorn ----------------------------------------------------------


def test_gunicorn_makes_a_metrics_directory_of_its_own(monkeypatch, tmp_path,
                                                       gunicorn_master):
    """Unset, a fresh directory per master, removed at exit; one left by a killed master is
    removed by the next one to start."""
    # Set, then deleted: monkeypatch restores only what it changed, and the hook below sets
    # the variable (a later test's subprocess would inherit a removed directory).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphaned = tmp_path / f"order-service-metrics-{dead.pid}-abc"
    alive = tmp_path / f"order-service-metrics-{os.getpid()}-def"
    for directory in (orphaned, alive):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"")
    hooks, master = gunicorn_hooks(), gunicorn_master()
    hooks["on_starting"](master)
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.parent == tmp_path and made.is_dir() and not list(made.iterdir())
    assert not orphaned.exists() and alive.exists()
    hooks["on_exit"](master)
    assert not made.exists()


def test_gunicorn_empties_the_metrics_directory_it_is_given(monkeypatch, tmp_path,
                                                            gunicorn_master):
    (tmp_path / "counter_12345.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    hooks, master = gunicorn_hooks(), gunicorn_master()
    hooks["on_starting"](master)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    hooks["on_exit"](master)
    assert tmp_path.is_dir()  # given, not made: left in place


def scrape_url(url: str, query: str = "") -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{url}/metrics{query}", timeout=5) as response:  # new connection
        return parse(response.read().decode())


def created_per_worker(directory: Path) -> dict[str, float]:
    """orders_total{lua, created} as each worker's own file holds it."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        for family in multiprocess.MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == "orders_total" and sample.labels.get("outcome") == "created":
                    counts[path.name] = counts.get(path.name, 0) + sample.value
    return counts


def test_every_worker_is_counted(tmp_path):
    """Two gunicorn workers take the orders; any scrape, by either worker, counts them all,
    and still does after a worker is killed and replaced. A stale file of a previous run in
    the directory is not counted."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = MmapedDict(str(directory / "counter_999999.db"))
    stale.write_value(mmap_key("orders", "orders_total", ("strategy", "outcome"),
                               ("lua", "created"), "stale"), 1000.0, 0.0)
    stale.close()
    with LocalReplicas(replicas=1, workers=2,
                      env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as cluster:
        url = cluster.urls[0]
        assert http_json("PUT", f"{url}/stock/{SKU}", {"quantity": 100_000})[0] == 200
        sent = 0
        for _ in range(20):  # bursts until both workers have taken orders
            results = run_burst([url], 20, "/orders?strategy=lua", body={"sku": SKU})
            assert [r.status for r in results] == [201] * 20
            sent += 20
            if len([n for n in created_per_worker(directory).values() if n]) == 2:
                break
        per_worker = created_per_worker(directory)
        assert len([n for n in per_worker.values() if n]) == 2, per_worker
        assert sum(per_worker.values()) == sent
        for _ in range(8):
            samples = scrape_url(url)
            assert value(samples, "orders_total", strategy="lua", outcome="created") == sent
            assert value(samples, "order_latency_seconds_count", strategy="lua") == sent

        master = psutil.Process(cluster.replicas[0].process.pid)
        victim = master.children()[0].pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len([p for p in master.children() if p.pid != victim]) == 2,
                 "gunicorn replaces the killed worker", limit_s=15)
        wait_for(cluster.replicas[0].ready, "the replica answers again", limit_s=15)
        for _ in range(4):
            samples = scrape_url(url)
            assert value(samples, "orders_total", strategy="lua", outcome="created") == sent
        samples = scrape_url(url, f"?sku={SKU}")
        assert value(samples, "order_stock", sku=SKU) == 100_000 - sent
        assert value(samples, "order_sold", sku=SKU) == sent
