"""Redis Cluster specifics: the local cluster is real, every key of a SKU shares one slot, and
a master that goes away fails only its own SKUs, with a prompt 503.

The lock, API (idempotency included) and multi-replica seed tests also run on the cluster:
see ``tests/backends.py``.
"""

from __future__ import annotations

import time

import pytest
import redis
from redis.cluster import key_slot
from redis.exceptions import MovedError

from harness.redis_cluster import SLOTS, RedisClusterNodes
from service import create_app
from service.keys import (
    SkuKeys,
    deadlines_key,
    fence_key,
    grant_prefix,
    new_order_id,
    queue_key,
)


def slot(key: str) -> int:
    return key_slot(key.encode())


def sku_keys(sku: str) -> list[str]:
    keys = SkuKeys(sku)
    return [keys.stock, keys.sold, keys.supplied, *keys.lock_keys, *keys.reservation_keys,
            keys.limit, keys.read_mark, grant_prefix(keys.lock) + "a-token",
            keys.order(new_order_id(sku)), keys.order_prefix + "an-order-id-from-the-holds",
            keys.idempotency("any-key")]


@pytest.mark.parametrize("sku", ["default", "a", "SKU-1.2:x", "z" * 64])
def test_every_key_of_a_sku_shares_its_slot(sku):
    assert {slot(key) for key in sku_keys(sku)} == {slot("{" + sku + "}")}


def test_helper_keys_share_the_lock_slot():
    for name in ["{sku}:lock", "plain-name", "a{b}c"]:
        for key in (fence_key(name), queue_key(name), deadlines_key(name),
                    grant_prefix(name) + "some-token"):
            assert slot(key) == slot(name)


def test_the_local_cluster_has_three_masters_sharing_the_slots(redis_cluster_nodes):
    with redis_cluster_nodes.client(decode_responses=True) as client:
        assert len(client.get_primaries()) == 3  # as the client discovered it from one node
    ranges = redis_cluster_nodes.ranges
    assert sum(len(r) for r in ranges) == SLOTS and len({r.start for r in ranges}) == 3
    for server in redis_cluster_nodes.servers:
        info = RedisClusterNodes.cluster_info(server)
        assert info["cluster_state"] == "ok" and info["cluster_slots_ok"] == str(SLOTS)


def test_orders_land_on_the_master_that_serves_their_sku(make_app, redis_cluster_nodes):
    app = make_app(redis_url=redis_cluster_nodes.url, redis_cluster=True)
    client = app.test_client()
    skus = [f"spread-{i}" for i in range(12)]
    for sku in skus:
        client.put(f"/stock/{sku}", json={"quantity": 1})
        assert client.post("/orders", json={"sku": sku}).status_code == 201
    owners = {redis_cluster_nodes.server_for(SkuKeys(sku).stock).port for sku in skus}
    assert len(owners) == 3  # the SKUs really are spread over the masters
    for sku in skus:
        owner = redis_cluster_nodes.server_for(SkuKeys(sku).stock)
        for server in redis_cluster_nodes.servers:
            with server.client() as node:
                # Asked directly (no redirect), only the owner holds the SKU's figures.
                try:
                    sold = node.get(SkuKeys(sku).sold)
                except MovedError:  # not this node's slot
                    assert server is not owner
                    continue
                assert server is owner and sold == b"1"


def test_a_script_over_two_slots_is_refused_by_the_cluster(redis_cluster_nodes):
    """Why every key carries the SKU's tag: without it, the keys of one order fall into
    different slots, and a cluster master refuses the script outright."""
    script = "return redis.call('GET', KEYS[1])"
    with redis_cluster_nodes.server_for("{a}").client() as node:
        assert node.eval(script, 2, "{a}:stock", "{a}:sold") is None
    with redis_cluster_nodes.server_for("a:stock").client() as node:
        with pytest.raises(redis.ResponseError, match="same slot"):  # CROSSSLOT
            node.eval(script, 2, "a:stock", "a:sold")


@pytest.fixture
def own_cluster(request):
    """A cluster of its own: the tests stop one of its masters (the session's stays whole).
    ``full_coverage``: Redis's default, which the service's clusters must not use."""
    full_coverage = getattr(request, "param", False)
    with RedisClusterNodes(masters=3, require_full_coverage=full_coverage) as nodes:
        yield nodes


def skus_on(nodes: RedisClusterNodes, index: int, count: int) -> list[str]:
    names = (f"sku-{i}" for i in range(10_000))
    return [s for s in names if nodes.server_for(SkuKeys(s).stock) is nodes.servers[index]][:count]


def wait_until_marked_failed(nodes: RedisClusterNodes, down: int, timeout: float = 15) -> None:
    """Until a surviving master has marked the stopped one failed (past the node timeout):
    from then on, a cluster that requires full coverage refuses every key."""
    survivor = nodes.servers[(down + 1) % len(nodes.servers)]
    address = f"127.0.0.1:{nodes.servers[down].port}"
    deadline = time.monotonic() + timeout
    while True:
        with survivor.admin(decode_responses=True) as admin:
            flags = admin.execute_command("CLUSTER NODES")[address]["flags"].split(",")
        if "fail" in flags:
            return
        assert time.monotonic() < deadline, f"master {down} never marked failed: {flags}"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("down", [0, 1], ids=["the-url-node-down", "another-master-down"])
@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_master_down_fails_its_skus_promptly_and_spares_the_others(own_cluster, strategy,
                                                                      down):
    master_down_spares_the_others(own_cluster, strategy, down)


@pytest.mark.slow
@pytest.mark.parametrize("own_cluster", [True], indirect=True, ids=["full-coverage"])
def test_requiring_full_coverage_fails_every_sku(own_cluster):
    """The control: with cluster-require-full-coverage yes, the same check fails once the
    stopped master is marked failed."""
    with pytest.raises(AssertionError, match="marked failed"):
        master_down_spares_the_others(own_cluster, "lua", 1)


def master_down_spares_the_others(nodes: RedisClusterNodes, strategy: str, down: int) -> None:
    app = create_app({"redis_url": nodes.url, "redis_cluster": True, "replica_id": "r",
                      "order_strategy": strategy, "redis_timeout_ms": 300,
                      "lock_wait_ms": 10_000})
    client = app.test_client()
    lost, kept = skus_on(nodes, down, 1)[0], skus_on(nodes, (down + 1) % 3, 1)[0]
    for sku in (lost, kept):
        assert client.put(f"/stock/{sku}", json={"quantity": 5}).status_code == 200
    nodes.servers[down].stop()

    for phase in ("just stopped", "marked failed"):
        if phase == "marked failed":
            wait_until_marked_failed(nodes, down)
        started = time.monotonic()
        answer = client.post("/orders", json={"sku": lost})
        assert answer.status_code == 503 and answer.content_type == "application/problem+json"
        assert time.monotonic() - started < 2.0, phase  # not LOCK_WAIT_MS
        assert client.get(f"/stock/{lost}").status_code == 503
        assert client.post("/orders", json={"sku": kept}).status_code == 201, phase
        assert client.get("/readyz").status_code == 200, phase  # other masters answer


def keys_on(nodes: RedisClusterNodes, index: int, count: int) -> list[str]:
    """Idempotency keys whose own hash slot is on master ``index``."""
    names = (f"key-{i}" for i in range(10_000))
    return [k for k in names if nodes.server_for(k) is nodes.servers[index]][:count]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["lua", "lock"])
def test_a_master_down_spares_keyed_orders_for_the_others_skus(own_cluster, strategy):
    """A keyed order touches its SKU's master only: with one master stopped, keyed orders
    (and their replays) for SKUs on the other two all succeed, whatever master the key's own
    hash would pick. Unkeyed orders are spared in the test above."""
    down = 2
    app = create_app({"redis_url": own_cluster.url, "redis_cluster": True, "replica_id": "r",
                      "order_strategy": strategy, "redis_timeout_ms": 300})
    client = app.test_client()
    skus = skus_on(own_cluster, 0, 3) + skus_on(own_cluster, 1, 3)
    # Keys hashed onto the stopped master, and onto the live ones.
    keys = keys_on(own_cluster, down, 3) + keys_on(own_cluster, 0, 3)
    for sku in skus:
        assert client.put(f"/stock/{sku}", json={"quantity": 5}).status_code == 200
    own_cluster.servers[down].stop()

    for attempt in ("first", "replay"):
        answers = {(sku, key): client.post("/orders", json={"sku": sku},
                                           headers={"Idempotency-Key": key}).status_code
                   for sku, key in zip(skus, keys, strict=True)}
        assert set(answers.values()) == {201}, (attempt, answers)
    assert all(client.get(f"/stock/{sku}").get_json()["sold"] == 1 for sku in skus)
