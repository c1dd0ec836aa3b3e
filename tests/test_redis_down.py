"""An unreachable or silent Redis gets a prompt 503 with Retry-After; recovery needs no restart."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import redis

from harness.redis_server import RedisServer, free_port
from service import create_app
from service.config import Settings
from service.redis_client import OsPollConnection, OsPollParser, connect

PROBLEM = "application/problem+json"


def app_for(url, **overrides):
    return create_app({"redis_url": url, "replica_id": "r", "redis_timeout_ms": 200,
                       **overrides}).test_client()


def assert_unavailable(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_redis_down_answers_503_then_recovers(tmp_path, strategy):
    port = free_port()
    client = app_for(f"redis://127.0.0.1:{port}/0", order_strategy=strategy)

    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert_unavailable(client.put("/stock/s", json={"quantity": 1}))
    assert_unavailable(client.get("/stock/s"))
    assert_unavailable(client.get("/orders/s~0123456789abcdef0123"))
    assert_unavailable(client.get("/readyz"))
    assert client.get("/livez").status_code == 200

    with RedisServer(port=port, directory=str(tmp_path)):
        assert client.get("/readyz").status_code == 200
        assert client.put("/stock/s", json={"quantity": 1}).status_code == 200
        assert client.post("/orders", json={"sku": "s"}).status_code == 201


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers: a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_silent_redis_times_out_into_503(silent_server, strategy):
    client = app_for(silent_server, order_strategy=strategy)
    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert_unavailable(client.get("/readyz"))


def test_scripts_reload_after_a_script_flush(client, redis_client):
    client.put("/stock/s", json={"quantity": 2})
    assert client.post("/orders", json={"sku": "s"}).status_code == 201
    redis_client.script_flush()
    assert client.post("/orders", json={"sku": "s"}).status_code == 201
    assert client.post("/orders?strategy=lock", json={"sku": "s"}).status_code == 409


def test_lock_strategy_fails_at_once_not_after_the_lock_wait():
    """Redis refusing connections: the lock strategy answers 503 without waiting LOCK_WAIT_MS
    (a caller not yet queued for the lock has nothing to wait for)."""
    client = app_for(f"redis://127.0.0.1:{free_port()}/0", order_strategy="lock",
                     lock_wait_ms=10_000)
    started = time.monotonic()
    assert_unavailable(client.post("/orders", json={"sku": "s"}))
    assert time.monotonic() - started < 2.0



class BlindParser(OsPollParser):
    """The unsafe control: a pool check that never finds anything on a connection."""

    def can_read(self, timeout: float = 0) -> bool:
        return False


def read_after_a_kill(client, kill: Callable[[], None], blind: bool) -> None:
    """Write a value; ``kill`` has the server close the pooled connection while it sits idle
    in the pool; read the value back. The service's check finds the dead connection and the
    pool connects afresh; a ``blind`` control sends the read down the dead connection and
    fails."""

    def reads_the_value() -> None:
        try:
            read = client.get("checked")
        except redis.ConnectionError as exc:
            read = exc
        assert read == "value"

    try:
        client.set("checked", "value")
        kill()
        if blind:
            with pytest.raises(AssertionError):
                reads_the_value()
        else:
            reads_the_value()
    finally:
        client.close()


@pytest.mark.parametrize("parser", [OsPollParser, BlindParser])
def test_a_pooled_connection_is_checked_before_it_is_reused(single_redis, parser):
    """The service's parser checks an idle connection with the OS's poll (not gevent's): it
    still finds one that the server closed, and the pool connects afresh. The control, which
    finds nothing, sends the command down the dead connection and fails."""
    client = connect(Settings.from_env({"REDIS_URL": single_redis.url}))
    assert client.connection_pool.connection_kwargs["parser_class"] is OsPollParser
    client.connection_pool.connection_kwargs["parser_class"] = parser

    def kill() -> None:
        with single_redis.admin() as admin:
            admin.client_kill_filter(_id=client.client_id())

    read_after_a_kill(client, kill, blind=parser is BlindParser)


class BlindConnection(redis.Connection):
    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, "parser_class": BlindParser})


@pytest.mark.parametrize("connection_class", [OsPollConnection, BlindConnection])
def test_a_pooled_cluster_connection_is_checked_before_it_is_reused(redis_cluster_nodes,
                                                                      connection_class):
    """The same on a Redis Cluster, whose client takes the parser through its connection
    class: a connection that a master closed while it sat in the pool is found, and the
    control, which finds nothing, fails."""
    client = connect(Settings.from_env(redis_cluster_nodes.service_env()))
    node = client.get_node_from_key("checked")
    pool = client.get_redis_connection(node).connection_pool
    assert pool.connection_class is OsPollConnection
    pool.connection_class = connection_class

    def kill() -> None:
        pooled_id = client.client_id(target_nodes=node)
        with redis_cluster_nodes.server_for("checked").admin() as admin:
            admin.client_kill_filter(_id=pooled_id)

    read_after_a_kill(client, kill, blind=connection_class is BlindConnection)
