"""The Lua scripts in ``lua/``, read once and registered with a Redis client.

redis-py's ``Script`` runs EVALSHA and reloads the script by itself on NOSCRIPT (after a Redis
restart or SCRIPT FLUSH), so the hot path is one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


INCLUDE = "--#include "


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``, each ``--#include other`` line replaced by that file."""
    lines = (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(source(line[len(INCLUDE):].strip()) if line.startswith(INCLUDE) else line
                   for line in lines)


@dataclass(frozen=True)
class OrderScripts:
    place_order: Script
    commit_order: Script
    set_stock: Script

    @classmethod
    def register(cls, client: redis.Redis) -> OrderScripts:
        return cls(
            place_order=client.register_script(source("place_order")),
            commit_order=client.register_script(source("commit_order")),
            set_stock=client.register_script(source("set_stock")),
        )
