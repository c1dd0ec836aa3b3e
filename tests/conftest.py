"""Fixtures: a real redis-server per test session, a fresh app per test, local clusters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from benchmarks.invariants import Books
from benchmarks.redis_server import RedisServer
from service import create_app


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_app(redis_server: RedisServer, redis_client: redis.Redis) -> Callable[..., Flask]:
    """Build an app against the session's Redis; keyword arguments override Settings fields."""

    def build(**overrides: Any) -> Flask:
        config = {"redis_url": redis_server.url, "replica_id": "test-replica", **overrides}
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
