"""LeaseWatchdog: keeps the leases of live lock holders from running out, as Redisson's does.

One daemon thread per process (a greenlet under gunicorn's gevent worker) renews every
registered lock at a third of its lease, with the holder's token (redis-py's reacquire
script: PEXPIRE only if the token still holds the lock).
A holder that is frozen or killed stops renewing with its process, so its lease runs out as
usual; a renewal that finds the lock gone counts it lost, logs it and stops renewing it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Any

from . import metrics
from .redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)


class LeaseWatchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []  # (when due, handle)
        self._entries: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        # When the thread wakes by itself: infinity while it waits for a notify, minus
        # infinity while it is awake (it looks at the heap before it waits again).
        self._wakes_at = -math.inf

    def watch(self, lock: Any, token: bytes, lease_ms: int) -> int:
        """Renew ``lock`` (held with ``token``) every lease/3 until ``unwatch``: a handle."""
        handle = next(self._ids)
        due = time.monotonic() + lease_ms / 3000
        with self._cond:
            self._entries[handle] = {"lock": lock, "token": token, "lease_ms": lease_ms}
            heapq.heappush(self._heap, (due, handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-watchdog",
                                                daemon=True)
                self._thread.start()
            elif due < self._wakes_at:  # due before the thread would look: wake it now
                self._cond.notify()
        return handle

    def unwatch(self, handle: int) -> None:
        """Stop renewing."""
        with self._cond:
            self._entries.pop(handle, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                handle, entry = self._next_due()
            self._renew(handle, entry)

    def _next_due(self) -> tuple[int, dict[str, Any]]:
        """(Holding the condition.) Sleep until the next renewal that is still watched is due,
        and take it off the heap.

        Most holders let go long before their first renewal. Whenever the thread wakes, it
        drops the heap entries of those ahead of the next renewal still watched, instead of
        waiting for each one's time: under a stream of orders it wakes about once a renewal
        period, not once an order.
        """
        while True:
            while self._heap and self._heap[0][1] not in self._entries:
                heapq.heappop(self._heap)  # let go of since: nothing to renew
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                _, handle = heapq.heappop(self._heap)
                return handle, self._entries[handle]
            self._wakes_at = self._heap[0][0] if self._heap else math.inf
            self._cond.wait(self._wakes_at - now if self._heap else None)
            self._wakes_at = -math.inf

    def _renew(self, handle: int, entry: dict[str, Any]) -> None:
        lock, lease_ms = entry["lock"], entry["lease_ms"]
        result = "renewed"
        try:
            held = lock.lua_reacquire(keys=[lock.name], args=[entry["token"], lease_ms],
                                      client=lock.redis)
        except REDIS_ERRORS as exc:  # try again soon; the lease may still save us
            log.warning("lease of %s not renewed: %s", lock.name, exc)
            held, result = True, "error"
        with self._cond:
            watched = handle in self._entries  # else the holder let go meanwhile
            if watched and held:
                heapq.heappush(self._heap, (time.monotonic() + lease_ms / 3000, handle))
            elif watched:  # no more renewals; the holder's write is fenced out
                result = "lost"
                log.warning("lock %s was lost before its holder finished", lock.name)
            elif not held:  # released, not lost: nothing to tell
                return
        metrics.lease_renewal(result)


WATCHDOG = LeaseWatchdog()
