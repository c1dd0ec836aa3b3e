"""Fixtures: a real redis-server and a real 3-master Redis Cluster per test session, a fresh
app per test.

Tests use ``redis_server`` (the single server unless parametrized) and ``redis_client``. A test
or module runs on every backend with ``@pytest.mark.parametrize("redis_server", BACKENDS,
indirect=True)``: "single", "cluster" (a ``RedisClusterNodes``) and "acl" (a server that needs a
password, the service connecting as an ACL user without the dangerous commands). Each has
``url``, ``service_password``, ``cluster``, ``client()`` (as the service connects),
``admin()`` and ``server_for(key)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from harness.books import Books
from harness.redis_cluster import RedisClusterNodes
from harness.redis_server import RedisServer
from service import create_app

Backend = RedisServer | RedisClusterNodes
_BACKEND_FIXTURES = {"single": "single_redis", "cluster": "redis_cluster_nodes",
                     "acl": "acl_redis"}


@pytest.fixture(scope="session")
def single_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def acl_redis() -> Iterator[RedisServer]:
    with RedisServer(password="admin-secret", acl_user=("orders", "orders-secret")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes(masters=3) as nodes:
        yield nodes


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(_BACKEND_FIXTURES[getattr(request, "param", "single")])


@pytest.fixture
def redis_client(redis_server: Backend) -> Iterator[redis.Redis]:
    with redis_server.admin() as admin:
        admin.flushall()
    client = redis_server.client(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def make_app(redis_server: Backend, redis_client: redis.Redis) -> Callable[..., Flask]:
    """Build an app against the session's Redis; keyword arguments override Settings fields."""

    def build(**overrides: Any) -> Flask:
        config = {"redis_url": redis_server.url, "redis_cluster": redis_server.cluster,
                  "redis_password": redis_server.service_password or "",
                  "replica_id": "test-replica", **overrides}
        app = create_app(config)
        app.config["TESTING"] = True
        return app

    return build


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


@pytest.fixture
def books(redis_client: redis.Redis) -> Callable[[str], Books]:
    return lambda sku: Books(redis_client, sku)


@pytest.fixture
def gunicorn_master(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SimpleNamespace]:
    """Makes the stand-in for gunicorn's server that gunicorn.conf.py's master hooks
    (on_starting, on_exit) are handed: a log, and settings (gevent, 256 connections, 16
    threads, unless given). on_starting sets REDIS_MAX_CONNECTIONS: set, then deleted here,
    so that monkeypatch unsets it again afterwards (a later test's replicas would inherit it).
    """
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "")
    monkeypatch.delenv("REDIS_MAX_CONNECTIONS")

    def make(**settings: Any) -> SimpleNamespace:
        cfg = {"worker_class_str": "gevent", "worker_connections": 256, "threads": 16,
               **settings}
        return SimpleNamespace(log=SimpleNamespace(info=lambda *args: None),
                               cfg=SimpleNamespace(**cfg))

    return make
