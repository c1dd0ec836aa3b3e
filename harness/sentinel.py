"""A Redis master, its replica and 3 Sentinels on loopback, from the same ``redis-server``.

The replica replicates through a ``FlakyProxy``, so a test can stall or cut the replication
link (``link``) while clients keep talking to the master directly. The Sentinels watch the
master under ``master_name`` and promote the replica when it stops answering:

    with SentinelRedis() as redis_set:
        redis_set.service_env()      # REDIS_SENTINELS, REDIS_SENTINEL_MASTER for the service
        redis_set.link.stall()       # the replica stops receiving writes
        redis_set.crash_master()     # SIGKILL: what the replica did not get is gone
        redis_set.wait_for_failover()
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .proxy import FlakyProxy
from .redis_server import (
    RedisServer,
    RedisServerError,
    find_redis_server,
    free_port,
    stop_process,
)

MASTER_NAME = "mymaster"


class Sentinel:
    """One ``redis-server --sentinel`` process, monitoring one master."""

    def __init__(self, directory: Path, master_name: str, master_port: int, quorum: int,
                 down_after_ms: int, failover_timeout_ms: int) -> None:
        self.port = free_port()
        self.directory = directory
        self.config = directory / f"sentinel-{self.port}.conf"
        # Sentinel rewrites its file as it learns the topology: it must be writable.
        self.config.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {directory}",
            f"logfile {directory / f'sentinel-{self.port}.log'}",
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1", "",
        ]))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([find_redis_server(), str(self.config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, decode_responses=True)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


class SentinelRedis:
    """A master, one replica behind ``link`` (a FlakyProxy), and ``sentinels`` Sentinels."""

    def __init__(self, sentinels: int = 3, master_name: str = MASTER_NAME,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 10000,
                 link: bool = True) -> None:
        """``link`` False: the replica replicates from the master directly (no proxy to stall,
        and none of its cost in a measurement)."""
        self.master_name = master_name
        self.directory = Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
        self.master = RedisServer(directory=self._subdir("master"))
        self.replica: RedisServer | None = None
        self.link: FlakyProxy | None = None
        self._sentinel_args = (sentinels, down_after_ms, failover_timeout_ms)
        self._use_link = link
        self.sentinels: list[Sentinel] = []

    def _subdir(self, name: str) -> str:
        path = self.directory / name
        path.mkdir(exist_ok=True)
        return str(path)

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS: ``host:port,host:port,...``."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def url(self) -> str:
        """REDIS_URL beside REDIS_SENTINELS: only its credentials and database count."""
        return "redis://127.0.0.1/0"

    def service_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "REDIS_SENTINELS": self.sentinel_addresses,
                "REDIS_SENTINEL_MASTER": self.master_name, "REDIS_CLUSTER": "0",
                "REDIS_PASSWORD": ""}

    def start(self, timeout: float = 30.0) -> SentinelRedis:
        try:
            self.master.start()
            upstream = self.master.port
            if self._use_link:
                self.link = FlakyProxy(self.master.port).start()
                upstream = self.link.port
            self.replica = RedisServer(directory=self._subdir("replica"), extra_args=(
                "--replicaof", "127.0.0.1", str(upstream)))
            self.replica.start()
            count, down_after_ms, failover_timeout_ms = self._sentinel_args
            quorum = count // 2 + 1
            self.sentinels = [Sentinel(self.directory, self.master_name, self.master.port,
                                       quorum, down_after_ms, failover_timeout_ms)
                              for _ in range(count)]
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait_until_watched(time.monotonic() + timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _wait_until_watched(self, deadline: float) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and the others:
        only then can a fail-over happen."""
        others = len(self.sentinels) - 1
        while True:
            try:
                synced = self.replica.admin().info("replication").get(
                    "master_link_status") == "up"
                watched = synced and all(self._sees(sentinel, others)
                                         for sentinel in self.sentinels)
            except redis.RedisError:
                watched = False
            if watched:
                return
            if time.monotonic() > deadline:
                raise RedisServerError("the Sentinels did not come to watch the master in time")
            time.sleep(0.1)

    def _sees(self, sentinel: Sentinel, others: int) -> bool:
        with sentinel.client() as client:
            master = client.execute_command("SENTINEL", "MASTER", self.master_name)
            fields = dict(zip(master[::2], master[1::2], strict=True)) if isinstance(
                master, list) else master
            return (int(fields["num-slaves"]) >= 1
                    and int(fields["num-other-sentinels"]) >= others)

    def master_port(self) -> int:
        """The port the Sentinels now name as the master."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    _, port = client.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                    return int(port)
            except redis.RedisError:
                continue
        raise RedisServerError("no Sentinel answers")

    def as_started(self) -> bool:
        """Whether the Sentinels still name the first master, and the replica is in sync with
        it through ``link``. A fail-over the harness did not cause (the master silent for
        ``down_after_ms`` on a starved machine) leaves the link out of the replication path."""
        try:
            named = self.master_port() == self.master.port
        except RedisServerError:
            return False
        upstream = self.link.port if self.link is not None else self.master.port
        return named and self.replica.in_sync(upstream)

    def crash_master(self) -> None:
        """SIGKILL the master: whatever its replica had not received is lost with it."""
        self.master.crash()

    def wait_for_failover(self, timeout: float = 30.0) -> RedisServer:
        """Until the Sentinels name the replica as master and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.master_port() == self.replica.port:
                    with self.replica.admin() as client:
                        if client.info("replication")["role"] == "master":
                            return self.replica
            except RedisServerError:
                pass
            time.sleep(0.1)
        raise RedisServerError(f"no fail-over within {timeout}s")

    def rejoin_old_master(self, timeout: float = 30.0) -> None:
        """Start the killed master again on its port, empty, as a replica of the master the
        Sentinels now name (what a restarted Redis pod of a Sentinel set does: it asks them
        first), and wait until it is in sync: the new master has a replica again, so a WAIT
        for one can be met. Left alone, the Sentinels would convert it too, but only after
        their next INFO round (about 10 s)."""
        self.master.extra_args = ("--replicaof", "127.0.0.1", str(self.master_port()))
        self.master.start()
        self.master.wait_in_sync(time.monotonic() + timeout)

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        if self.link is not None:
            self.link.stop()
            self.link = None
        for server in (self.replica, self.master):
            if server is not None:
                server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

