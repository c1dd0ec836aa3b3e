"""A worker is ready before its first request, and stays answerable under a lock pile-up:
a real gunicorn replica (gunicorn.conf.py's post_worker_init) against a real redis-server."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from harness.http import http_json
from harness.replicas import LocalReplicas
from service.keys import SkuKeys, queue_key
from service.lock import FencedLock
from service.scripts import OrderScripts

from .deploy_checks import gunicorn_hooks
from .waiting import wait_for

THREADS = 4


def started(**env: str) -> LocalReplicas:
    return LocalReplicas(replicas=1, workers=1, threads=THREADS,
                        env={"ORDER_STRATEGY": "lock", "LOCK_WAIT_MS": "5000", **env})


def test_a_worker_is_warm_before_its_first_request():
    with started() as cluster, cluster.redis_client(decode_responses=True) as admin:
        # Nothing has been ordered yet: the launcher only asked /readyz.
        scripts = [s.script for s in OrderScripts.register(admin).all()]
        FencedLock(admin, "any")
        scripts += [s.script for s in FencedLock.scripts()]
        shas = [hashlib.sha1(text.encode()).hexdigest() for text in scripts]
        assert all(admin.script_exists(*shas)), "every script is in Redis already"
        replica = cluster.replicas[0].replica_id
        named = [c for c in admin.client_list() if c.get("name") == replica]
        assert len(named) >= THREADS, "Redis connections opened in advance"


def test_the_first_requests_change_nothing_and_compile_the_url_map(make_app, redis_client,
                                                                   caplog):
    """gunicorn.conf.py's warm-up requests: Flask's URL map is compiled by them, and Redis,
    the order metrics and the order log are as they were."""
    hooks = gunicorn_hooks()
    app = make_app()
    assert app.url_map._remap  # not compiled before the first request
    caplog.set_level("INFO", logger="service.orders")
    hooks["_first_requests"](app)
    assert not app.url_map._remap
    assert redis_client.keys("*") == []
    assert not [r for r in caplog.records if r.name == "service.orders"]


def order(url: str, sku: str, finished: list[int]) -> None:
    status, _ = http_json("POST", f"{url}/orders", {"sku": sku}, timeout=30)
    finished.append(status)


@contextmanager
def lock_pile_up(url: str, admin, sku: str, orders: int,  # noqa: ANN001 - a Redis client
                 stock: int) -> Iterator[tuple[list[int], str]]:
    """``orders`` orders for ``sku`` sent at once while the test holds the SKU's lock. Yields
    the statuses answered so far (the order threads append to it) and the lock's queue; on
    leaving, the lock is released and every order awaited."""
    http_json("PUT", f"{url}/stock/{sku}", {"quantity": stock})
    holder = FencedLock(admin, SkuKeys(sku).lock, timeout=60)
    assert holder.acquire(blocking=False)
    finished: list[int] = []
    threads = [threading.Thread(target=order, args=(url, sku, finished)) for _ in range(orders)]
    for thread in threads:
        thread.start()
    try:
        yield finished, queue_key(SkuKeys(sku).lock)
    finally:
        holder.release()
        for thread in threads:
            thread.join(60)


GTHREAD = {"GUNICORN_WORKER_CLASS": "gthread"}


@pytest.mark.parametrize(("variant", "env", "capped", "answered_while_blocked"), [
    ("gevent (the default): a waiting order holds no thread", {}, False, True),
    ("gthread, waiters capped (LOCK_WAITERS=auto)",
     {**GTHREAD, "LOCK_WAITERS": "auto"}, True, True),
    ("unsafe: gthread, no cap", GTHREAD, False, False),
])
def test_probes_answer_while_orders_wait_for_a_lock(variant, env, capped,
                                                    answered_while_blocked):
    """THREADS orders wait on a SKU whose lock someone else holds: /livez and /readyz still
    answer while those orders wait. Under gevent a waiting order is a greenlet, and the
    probes are served beside it; under gthread, a cap keeps the probes a thread (the orders
    beyond it are refused at once). gthread without the cap lets every thread wait, and the
    probes get one only when the waits end (LOCK_WAIT_MS)."""
    with started(**env) as cluster, cluster.redis_client(decode_responses=True) as admin:
        url = cluster.urls[0]
        waiting = THREADS - 2 if capped else THREADS
        with lock_pile_up(url, admin, "pile-up", THREADS, stock=100) as (finished, queue):
            wait_for(lambda: admin.llen(queue) >= waiting, f"{waiting} orders queued", 10)
            answers = []
            for probe in ("/livez", "/readyz"):
                try:
                    with urllib.request.urlopen(url + probe, timeout=15) as response:
                        answers.append(response.status)
                except (urllib.error.URLError, TimeoutError) as exc:
                    answers.append(str(exc))
            still_waiting = admin.llen(queue)
        assert answers == [200, 200]
        assert (still_waiting >= waiting) is answered_while_blocked, (
            f"{variant}: {still_waiting} orders still waited when the probes answered")
        if answered_while_blocked:  # served once the lock was free; beyond a cap, refused
            assert sorted(finished) == [201] * (THREADS - 2) + [503 if capped else 201] * 2
        else:  # the probes got a thread only when an order gave up waiting (LOCK_WAIT_MS)
            assert 503 in finished


PILE = 120  # lock orders waiting at once on one gevent worker: more than redis-py's default pool


@pytest.mark.parametrize(("variant", "env", "served"), [
    ("the pool gunicorn.conf.py sizes", {}, True),
    ("unsafe: redis-py's default pool of 100", {"REDIS_MAX_CONNECTIONS": "100"}, False),
])
def test_a_gevent_worker_serves_a_pile_up_beyond_100_redis_connections(variant, env, served):
    """PILE orders wait for a SKU's lock in one gevent worker, each in a BLPOP on a Redis
    connection of its own: every one is served once the lock is free, and /readyz answers
    meanwhile. With redis-py's default pool of 100 connections, the orders beyond it and the
    probe's PING are refused (503)."""
    with LocalReplicas(replicas=1, workers=1, env={"ORDER_STRATEGY": "lock",
                                                   "LOCK_WAIT_MS": "20000", **env}) as cluster, \
            cluster.redis_client(decode_responses=True) as admin:
        url = cluster.urls[0]
        with lock_pile_up(url, admin, "big-pile-up", PILE, stock=1000) as (finished, queue):
            # Every order is either waiting in the lock's queue or answered already.
            wait_for(lambda: admin.llen(queue) + len(finished) >= PILE,
                     "every order queued or answered", 30)
            ready, _ = http_json("GET", f"{url}/readyz", timeout=15)
        assert (ready == 200 and finished == [201] * PILE) is served, (
            f"{variant}: /readyz {ready}, answers {sorted(set(finished))}, "
            f"{finished.count(201)} of {PILE} created")


@pytest.mark.parametrize(("worker_class", "given", "expected"), [
    ("gevent", None, "272"),  # 256 connections + 16
    ("gthread", None, "20"),  # 4 threads + 16
    ("gevent", "500", "500"),
])
def test_the_master_sizes_the_workers_redis_pool(monkeypatch, tmp_path, gunicorn_master,
                                                 worker_class, given, expected):
    """gunicorn.conf.py's on_starting (in the master, before any worker starts) lets each
    worker open a Redis connection per request it serves at once, and some to spare, unless
    REDIS_MAX_CONNECTIONS is given."""
    master = gunicorn_master(worker_class_str=worker_class, threads=4)
    if given is not None:
        monkeypatch.setenv("REDIS_MAX_CONNECTIONS", given)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # not under test: a directory made
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")      # here, and removed by on_exit
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    hooks = gunicorn_hooks()
    hooks["on_starting"](master)
    try:
        assert os.environ["REDIS_MAX_CONNECTIONS"] == expected
    finally:
        hooks["on_exit"](master)
