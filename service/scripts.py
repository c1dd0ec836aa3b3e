"""The Lua scripts in ``lua/``, read once and registered with a Redis client.

redis-py's ``Script`` runs EVALSHA and reloads the script by itself on NOSCRIPT (after a Redis
restart or SCRIPT FLUSH), so the hot path is one round trip. ``SlotScript`` narrows the reload
to the one master that serves the keys on a Redis Cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from .redis_client import ReplicaWait, execute_on_master, master_of

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


INCLUDE = "--#include "


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, each ``--#include other`` line replaced by that file
    (a file included twice, directly or not, only the first time)."""
    return _expand(name, set())


def _expand(name: str, included: set[str]) -> str:
    included.add(name)
    text = []
    for line in (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith(INCLUDE):
            text.append(line)
        elif (other := line[len(INCLUDE):].strip()) not in included:
            text.append(_expand(other, included))
    return "".join(text)


class SlotScript(Script):
    """A ``Script`` that, on a Redis Cluster, loads itself only on the master of its keys,
    and sends its EVALSHA straight to ``execute_command``.

    redis-py's sends SCRIPT LOAD to every master on NOSCRIPT: with one master down, the
    scripts of all the others would fail until each had them cached. Its call also goes
    through ``evalsha`` and its argument-deprecation wrapper, a few microseconds per order.
    (Not for pipelines: the lock queues its pipelined EVALSHA itself.)
    """

    def __call__(self, keys=None, args=None, client=None):  # noqa: ANN001 - as Script's
        client = client or self.registered_client
        keys = keys or ()
        command = ("EVALSHA", self.sha, len(keys), *keys, *(args or ()))
        try:
            return client.execute_command(*command)
        except NoScriptError:
            self.load(client, keys)
            return client.execute_command(*command)

    def call_and_wait(self, keys: Sequence[str], args: Sequence[Any], wait: ReplicaWait,
                      client: redis.Redis | RedisCluster | None = None,
                      mark: str | None = None) -> tuple[Any, bool]:
        """Run the script, then ``wait``'s WAIT on the same connection in the same round trip
        (on a Redis Cluster, the master of ``keys[0]``, which ran the script). Returns (the
        script's reply, whether enough replicas acknowledged it); without a WAIT, a plain
        call that counts as acknowledged. ``mark``: a key of the same slot to INCR before the
        WAIT, for a script that may write nothing (see ``ReplicaWait.queue``)."""
        if not wait.replicas:
            return self(keys, args, client), True
        client = client or self.registered_client
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        for attempt in range(2):
            pipe = master_of(client, keys[0]).pipeline(transaction=False)
            pipe.execute_command(*command)
            wait.queue(pipe, mark)
            reply, *_, acknowledged = execute_on_master(client, pipe, raise_on_error=False)
            if attempt or not isinstance(reply, NoScriptError):
                break
            self.load(client, keys)
        for answer in (reply, acknowledged):
            if isinstance(answer, Exception):
                raise answer
        return reply, wait.confirmed(acknowledged)

    def load(self, client: redis.Redis | RedisCluster, keys: Sequence[str] = ()) -> None:
        """SCRIPT LOAD where a call with ``keys`` runs: on a cluster, that key's master only."""
        if isinstance(client, RedisCluster) and keys:
            client.execute_command("SCRIPT LOAD", self.script,
                                   target_nodes=client.get_node_from_key(keys[0]))
        else:
            client.script_load(self.script)


def register(client: redis.Redis | RedisCluster, text: str) -> SlotScript:
    return SlotScript(client, text)


@dataclass(frozen=True)
class OrderScripts:
    place_order: SlotScript
    commit_order: SlotScript
    settle_order: SlotScript
    commit_settle: SlotScript
    expire_holds: SlotScript
    read_stock: SlotScript
    set_stock: SlotScript

    def all(self) -> tuple[SlotScript, ...]:
        return tuple(getattr(self, field.name) for field in dataclasses.fields(self))

    @classmethod
    def register(cls, client: redis.Redis) -> OrderScripts:
        return cls(**{field.name: register(client, source(field.name))
                      for field in dataclasses.fields(cls)})
