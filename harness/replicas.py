"""Local replicas: Redis (one server, or a Redis Cluster of M masters) and N replicas of the
service under gunicorn, on loopback.

The replicas run exactly what the Dockerfile runs: ``gunicorn -c gunicorn.conf.py
'service:create_app()'`` from the repository root, configured through the environment.

Alone: ``python -m harness.replicas --replicas 3`` brings one up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import runpy
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from .redis_cluster import RedisClusterNodes
from .redis_server import RedisServer, admin_client, free_port

ROOT = Path(__file__).resolve().parent.parent
# What a replica runs, from ROOT; the Dockerfile's CMD is "gunicorn" and these (see the tests).
GUNICORN_ARGS = ("-c", "gunicorn.conf.py", "service:create_app()")


def worker_class() -> str:
    """The worker class replicas started now run: gunicorn.conf.py's, read as gunicorn reads
    it (GUNICORN_WORKER_CLASS, else its default)."""
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["worker_class"]


REDIS_MODES = ("single", "cluster", "acl")


class ReplicaError(RuntimeError):
    pass


class Replica:
    def __init__(self, replica_id: str, env: dict[str, str], log_path: Path,
                 gunicorn_args: tuple[str, ...] = GUNICORN_ARGS) -> None:
        self.replica_id = replica_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = {**env, "PORT": str(self.port), "HOST": "127.0.0.1", "REPLICA_ID": replica_id,
                     "REDIS_CLIENT_NAME": replica_id}
        self.process: subprocess.Popen | None = None
        self.gunicorn_args = gunicorn_args
        # gunicorn.conf.py logs "Worker warm" per worker once it is ready for requests.
        self.workers = int(env.get("WEB_CONCURRENCY", "2")) if "-c" in gunicorn_args else 0
        self._log_start = 0

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()
        cwd, env = ROOT, self._env
        if "-c" not in self.gunicorn_args:
            # gunicorn reads ./gunicorn.conf.py unless told otherwise: a run without a
            # configuration file starts where there is none, with the code on its path.
            cwd = self.log_path.parent
            env = {**env, "PYTHONPATH": os.pathsep.join(
                filter(None, (env.get("PYTHONPATH"), str(ROOT))))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *self._bind(), *self.gunicorn_args],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _bind(self) -> tuple[str, ...]:
        """gunicorn.conf.py binds to HOST:PORT; without it, gunicorn would listen on every
        address: name loopback on the command line."""
        return () if "-c" in self.gunicorn_args else ("--bind", f"127.0.0.1:{self.port}")

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise ReplicaError(f"{self.replica_id} exited; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                if response.status != 200:
                    return False
        except OSError:
            return False
        # Ready once every worker is warm, not only the one that answered: a load started
        # earlier would put all its keep-alive connections on the first worker.
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().count(b"Worker warm") >= self.workers

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the replica's whole process group (master and workers)."""
        if self.process is not None:
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()


class LocalReplicas:
    """``with LocalReplicas(replicas=3) as cluster: cluster.urls``.

    ``env`` adds service settings (ORDER_STRATEGY, ENABLE_UNSAFE_STRATEGY, ...), and
    ``replica_env`` settings for single replicas (by number, from 1); ``redis_url`` uses an
    existing Redis instead of starting one. ``redis="cluster"`` starts a Redis Cluster of
    ``masters`` masters instead of one server, and the replicas run with REDIS_CLUSTER=1;
    ``redis="acl"`` one server with passwords, the replicas connecting as an ACL user.
    ``gunicorn_args`` replaces what the replicas run (the benchmark's baseline route).
    """

    def __init__(
        self, replicas: int = 3, env: dict[str, str] | None = None,
        redis_url: str | None = None, workers: int | None = 1, threads: int | None = None,
        log_dir: Path | None = None, replica_env: dict[int, dict[str, str]] | None = None,
        redis: str = "single", masters: int = 3,
        gunicorn_args: tuple[str, ...] = GUNICORN_ARGS,
    ) -> None:
        if redis not in REDIS_MODES:
            raise ValueError(f"redis must be one of {', '.join(REDIS_MODES)}, not {redis!r}")
        self.redis_mode = redis
        self.redis_server: RedisServer | RedisClusterNodes | None = None
        if not redis_url:
            if redis == "cluster":
                self.redis_server = RedisClusterNodes(masters)
            elif redis == "acl":
                self.redis_server = RedisServer(password=secrets.token_hex(12),
                                                acl_user=("orders", secrets.token_hex(12)))
            else:
                self.redis_server = RedisServer()
        self._redis_url = redis_url
        self.log_dir = log_dir
        self._env_extra = dict(env or {})
        self._replica_env = replica_env or {}
        self.n_replicas = replicas
        self.workers = workers
        self.threads = threads
        self.replicas: list[Replica] = []
        self.gunicorn_args = gunicorn_args

    @property
    def redis_url(self) -> str:
        return self._redis_url or self.redis_server.url

    def redis_client(self, **options: object) -> redis.Redis:
        """An administrator's client of the cluster's Redis (a ``RedisCluster`` in cluster
        mode)."""
        if self.redis_server is not None:
            return self.redis_server.admin(**options)
        return admin_client(self.redis_url, self.redis_mode == "cluster", **options)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def start(self, timeout: float = 30.0) -> LocalReplicas:
        if self.redis_server is not None:
            self.redis_server.start()
        log_dir = self.log_dir or Path(self.redis_server.directory if self.redis_server
                                       else ROOT / ".replica-logs")
        log_dir.mkdir(parents=True, exist_ok=True)
        redis_env = (self.redis_server.service_env() if self.redis_server is not None else
                     {"REDIS_URL": self.redis_url,
                      "REDIS_CLUSTER": "1" if self.redis_mode == "cluster" else "0"})
        # None: gunicorn.conf.py's own default, as the image runs it.
        sizes = {name: str(value) for name, value in (("WEB_CONCURRENCY", self.workers),
                                                      ("GUNICORN_THREADS", self.threads))
                 if value is not None}
        env = {**os.environ, **redis_env, **sizes, **self._env_extra}
        for index in range(1, self.n_replicas + 1):
            name = f"replica-{index}"
            self.replicas.append(Replica(name, {**env, **self._replica_env.get(index, {})},
                                         log_dir / f"{name}.log", self.gunicorn_args))
        self._start_replicas(timeout)
        return self

    def _start_replicas(self, timeout: float) -> None:
        for replica in self.replicas:
            replica.start()
        deadline = time.monotonic() + timeout
        try:
            for replica in self.replicas:
                while not replica.ready():
                    if time.monotonic() > deadline:
                        raise ReplicaError(f"{replica.replica_id} not ready in {timeout}s")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def restart_replicas(self, timeout: float = 30.0) -> None:
        """Stop every replica and start it again on its port (same Redis): fresh, cold
        processes, back once each reports ready."""
        for replica in self.replicas:
            replica.stop()
        self._start_replicas(timeout)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.replicas = []
        if self.redis_server is not None:
            self.redis_server.cleanup()

    def __enter__(self) -> LocalReplicas:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per replica")
    parser.add_argument("--strategy", default="lua", help="ORDER_STRATEGY of the replicas")
    parser.add_argument("--redis", choices=REDIS_MODES, default="single",
                        help="one redis-server, a Redis Cluster of --masters masters, or one "
                             "redis-server with passwords and an ACL user for the replicas")
    parser.add_argument("--masters", type=int, default=3)
    args = parser.parse_args()
    with LocalReplicas(replicas=args.replicas, workers=args.workers, redis=args.redis,
                      masters=args.masters, env={"ORDER_STRATEGY": args.strategy}) as cluster:
        print(f"redis: {cluster.redis_url}")
        for replica in cluster.replicas:
            print(f"{replica.replica_id}: {replica.url}  (log: {replica.log_path})")
        print("Ctrl-C to stop")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
