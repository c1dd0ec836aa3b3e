"""A real Redis Cluster on loopback: N ``redis-server`` masters in cluster mode, slots split
evenly, started from the same binary as ``RedisServer``.

``with RedisClusterNodes(masters=3) as nodes: nodes.url`` names one node; a cluster client
(``nodes.client()``) finds the others. By default each master serves its slots alone; with
``replicas=1`` each has a replica that the cluster promotes when its master fails. A master
with replicas announces the port of its ``FlakyProxy`` (``links``), so its replica replicates
through it and a test can stall or cut that link (``stall(replication_only=True)``: the
clients that share the proxy are served as usual).
"""

from __future__ import annotations

import random
import socket
import time

import redis
from redis.cluster import ClusterNode, key_slot

from .proxy import FlakyProxy
from .redis_server import RedisServer, RedisServerError

SLOTS = 16384
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def free_node_port(attempts: int = 200) -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too; both
    below Linux's default ephemeral range (32768-60999), where outgoing connections take
    their ports."""
    for _ in range(attempts):
        port = random.randint(12000, 32767 - BUS_OFFSET)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
            return port
        except OSError:
            continue
    raise RedisServerError("no free port pair for a cluster node")


def slot_ranges(masters: int) -> list[range]:
    """The 16384 hash slots, split into ``masters`` contiguous, nearly equal ranges."""
    bounds = [SLOTS * i // masters for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


class RedisClusterNodes:
    cluster = True

    def __init__(self, masters: int = 3, node_timeout_ms: int = 2000,
                 password: str | None = None, require_full_coverage: bool = False,
                 replicas: int = 0) -> None:
        """``require_full_coverage``: Redis's default, where one master down stops all.
        ``replicas``: replicas per master."""
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        self.password = password
        self._node_args = (
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A master down fails its own slots only: with the default (yes), the others
            # refuse every key once it is marked failed. The service relies on this.
            "--cluster-require-full-coverage", "yes" if require_full_coverage else "no",
            *(("--masterauth", password) if password else ()),
        )
        self.servers = [RedisServer(port=free_node_port(), password=password,
                                    extra_args=self._node_args) for _ in range(masters)]
        self.links: list[FlakyProxy] = []
        if replicas:
            for server in self.servers:
                self.links.append(FlakyProxy(server.port))
                server.extra_args += ("--cluster-announce-port", str(self.links[-1].port),
                                      "--cluster-announce-bus-port",
                                      str(server.port + BUS_OFFSET))
        self.replicas = {index: [RedisServer(port=free_node_port(), password=password,
                                             extra_args=self._node_args)
                                 for _ in range(replicas)] for index in range(masters)}
        self.ranges = slot_ranges(masters)

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.servers, *(r for group in self.replicas.values() for r in group)]

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def directory(self) -> str:
        return self.servers[0].directory

    def start(self, timeout: float = 30.0) -> RedisClusterNodes:
        deadline = time.monotonic() + timeout
        try:
            for link in self.links:
                link.start()
            for server in self.nodes:
                self._start_node(server)
            nodes = zip(self.servers, self.ranges, strict=True)
            for epoch, (server, slots) in enumerate(nodes, start=1):
                with server.admin() as client:
                    # Distinct epochs up front: no collision to resolve before the state is ok.
                    client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
                    client.execute_command("CLUSTER ADDSLOTS", *slots)
            self._meet()
            self._wait_until_ok(deadline)
            self._attach_replicas(deadline)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _attach_replicas(self, deadline: float) -> None:
        """CLUSTER REPLICATE each replica to its master; wait until every one is in sync."""
        for index, group in self.replicas.items():
            with self.servers[index].admin(decode_responses=True) as client:
                master_id = client.execute_command("CLUSTER MYID")
            for replica in group:
                with replica.admin() as client:
                    while True:  # until the replica has heard of its master through gossip
                        try:
                            client.execute_command("CLUSTER REPLICATE", master_id)
                            break
                        except redis.ResponseError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.05)
        for replica in (r for group in self.replicas.values() for r in group):
            replica.wait_in_sync(deadline)

    @staticmethod
    def _start_node(server: RedisServer, attempts: int = 3) -> None:
        """Start one node; if its port (or bus port) was taken meanwhile, on fresh ports."""
        for attempt in range(attempts):
            try:
                server.start()
                return
            except RedisServerError:
                if attempt == attempts - 1:
                    raise
                server.port = free_node_port()

    def _meet(self) -> None:
        """The first node meets every other; the rest learn of each other by gossip."""
        with self.servers[0].admin() as first:
            for server in self.nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", server.port)

    def _wait_until_ok(self, deadline: float) -> None:
        """Until every node says cluster_state:ok, knows all nodes and sees every slot.

        A handshake that does not finish within the node timeout is dropped, and Redis does
        not try it again (a loaded machine with a short node timeout loses one now and then):
        the meetings are repeated every second until every node knows every other."""
        expected = {"cluster_state": "ok", "cluster_known_nodes": str(len(self.nodes)),
                    "cluster_slots_ok": str(SLOTS)}
        met = time.monotonic()
        while True:
            states = [self.cluster_info(server) for server in self.nodes]
            if all(all(state.get(k) == v for k, v in expected.items()) for state in states):
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"cluster not ok in time: {states}")
            if time.monotonic() - met > 1.0:
                self._meet()  # a node already known is met again harmlessly
                met = time.monotonic()
            time.sleep(0.05)

    @staticmethod
    def cluster_info(server: RedisServer) -> dict[str, str]:
        with server.admin(decode_responses=True) as client:
            text = client.execute_command("CLUSTER INFO")
        if isinstance(text, dict):
            return {k: str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    @property
    def service_password(self) -> str | None:
        return self.password

    def service_env(self) -> dict[str, str]:
        """REDIS_URL, REDIS_PASSWORD and REDIS_CLUSTER for a replica of the service."""
        return {"REDIS_URL": self.url, "REDIS_PASSWORD": self.password or "",
                "REDIS_CLUSTER": "1"}

    def client(self, **options: object) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.url, password=self.password, **options)

    admin = client

    def server_for(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot."""
        slot = key_slot(key.encode())
        return next(s for s, slots in zip(self.servers, self.ranges, strict=True) if slot in slots)

    def version(self) -> str:
        return self.servers[0].version()

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The (first) replica started for ``master``."""
        return self.replicas[self.servers.index(master)][0]

    def link_of(self, master: RedisServer) -> FlakyProxy:
        """The proxy ``master`` announces: its replication link, and its clients' way in."""
        return self.links[self.servers.index(master)]

    def as_started(self, master: RedisServer) -> bool:
        """Whether ``master`` still is its replica's master (no fail-over since the start: the
        replica replicates through ``master``'s link)."""
        return self.replica_of(master).in_sync(self.link_of(master).port)

    def wait_for_failover(self, master: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Until ``master``'s replica has taken over its slots and says so."""
        replica = self.replica_of(master)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with replica.admin(decode_responses=True) as client:
                    if (client.info("replication")["role"] == "master"
                            and self.cluster_info(replica).get("cluster_state") == "ok"):
                        return replica
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RedisServerError(f"no fail-over of {master.port} within {timeout}s")

    def rejoin(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed master again on its port and files: it finds its slots taken by
        the replica promoted in its place, and becomes that one's replica. Returns once in
        sync, so a WAIT for one replica can be met again."""
        server.start()
        server.wait_in_sync(time.monotonic() + timeout)

    def client_of_live_nodes(self, **options: object) -> redis.RedisCluster:
        """A cluster client that starts from whichever nodes are up (``client`` starts from
        the first master, which a fault may have killed)."""
        nodes = [ClusterNode("127.0.0.1", s.port) for s in self.nodes if s.process is not None]
        return redis.RedisCluster(startup_nodes=nodes, password=self.password, **options)

    def cleanup(self) -> None:
        for server in self.nodes:
            server.cleanup()
        for link in self.links:
            link.stop()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
