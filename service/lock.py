"""FencedLock: redis-py's ``Lock`` with fencing tokens and waiters woken by the release.

A drop-in for ``redis.lock.Lock`` (``client.lock(name, lock_class=FencedLock)`` works, and
``name`` holds the holder's token as its plain value). What it adds:

* Every acquisition takes the next value of a per-lock counter, atomically with the acquire,
  and exposes it as ``fencing_token``. Storage that only accepts writes carrying the newest
  token (``lua/commit_order.lua``) refuses a holder whose lease ran out while it was paused.
* A waiter blocks on a signal list (BLPOP) that each release pushes to, instead of sleeping a
  fixed interval: the release wakes the longest waiter at once. A waiter never blocks longer
  than the holder's remaining lease, so a holder that died without releasing costs one lease.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

try:  # what a connection uses when the client was built without a socket_timeout
    from redis._defaults import DEFAULT_SOCKET_TIMEOUT
except ImportError:  # older redis-py: no timeout
    DEFAULT_SOCKET_TIMEOUT = None

from . import scripts
from .keys import fence_key, signal_key

__all__ = ["FencedLock", "LockError", "LockNotOwnedError"]

# How long a release signal waits for a waiter that has not started blocking yet.
SIGNAL_TTL_MS = 1000
# A waiter's single block must end before the client's socket timeout would fire.
_SOCKET_TIMEOUT_SHARE = 0.5
# Redis truncates a BLPOP timeout to whole milliseconds, and 0 means "forever": shorter waits
# (a lease about to end, a caller about to give up) sleep instead of blocking.
MIN_BLOCK_S = 0.01


class FencedLock(Lock):
    lua_fenced_acquire = None
    lua_signalling_release = None

    def __init__(self, redis: Any, name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(redis, name, *args, **kwargs)
        self.fence_name = fence_key(name)
        self.signal_name = signal_key(name)
        self.local.fencing_token = None

    def register_scripts(self) -> None:
        super().register_scripts()
        cls = self.__class__
        if cls.lua_fenced_acquire is None:
            cls.lua_fenced_acquire = self.redis.register_script(scripts.source("lock_acquire"))
        if cls.lua_signalling_release is None:
            cls.lua_signalling_release = self.redis.register_script(
                scripts.source("lock_release")
            )

    @property
    def fencing_token(self) -> int | None:
        """The token of this holder's current acquisition; None when it does not hold the lock."""
        return getattr(self.local, "fencing_token", None)

    def acquire(
        self,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
    ) -> bool:
        """Acquire the lock, as ``Lock.acquire``; waiting is woken by the holder's release.

        ``sleep`` bounds one wait for a release signal (redis-py's meaning, a poll interval,
        would waste the wake-up); by default a wait lasts until the holder's lease ends.
        """
        if token is None:
            token = uuid.uuid1().hex.encode()
        else:
            token = self.redis.get_encoder().encode(token)
        blocking = self.blocking if blocking is None else blocking
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        deadline = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        while True:
            holder_pttl = self._try_acquire(token)
            if holder_pttl is None:
                self.local.token = token
                return True
            if not blocking:
                return False
            wait = self._wait_bound(sleep, holder_pttl, deadline)
            if wait is None:
                return False
            if wait < MIN_BLOCK_S:
                time.sleep(wait)
            else:
                self.redis.blpop([self.signal_name], timeout=wait)

    def do_acquire(self, token: str) -> bool:
        if self._try_acquire(token) is None:
            self.local.token = token
            return True
        return False

    def _try_acquire(self, token: bytes | str) -> int | None:
        """None when acquired (the fencing token is stored); else the holder's PTTL in ms."""
        lease_ms = math.ceil(self.timeout * 1000) if self.timeout else 0
        acquired, value = self.lua_fenced_acquire(
            keys=[self.name, self.fence_name], args=[token, lease_ms], client=self.redis
        )
        if acquired:
            self.local.fencing_token = int(value)
            return None
        return int(value)

    def _wait_bound(
        self, sleep: float | None, holder_pttl: int, deadline: float | None
    ) -> float | None:
        """Seconds to block for a release signal now; None when the caller's time is up."""
        bounds = []
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            bounds.append(remaining)
        if holder_pttl >= 0:  # -1: the holder has no lease
            bounds.append(holder_pttl / 1000)
        if sleep is not None:
            bounds.append(sleep)
        socket_timeout = self.redis.connection_pool.connection_kwargs.get(
            "socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        if socket_timeout:
            bounds.append(socket_timeout * _SOCKET_TIMEOUT_SHARE)
        return max(min(bounds, default=1.0), 0.0005)  # never a busy spin

    def do_release(self, expected_token: str) -> None:
        self.local.fencing_token = None
        released = self.lua_signalling_release(
            keys=[self.name, self.signal_name],
            args=[expected_token, max(SIGNAL_TTL_MS, int((self.timeout or 0) * 1000))],
            client=self.redis,
        )
        if not released:
            raise LockNotOwnedError(
                "Cannot release a lock that's no longer owned", lock_name=self.name
            )
