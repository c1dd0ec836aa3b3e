"""Cohorts: the threads of one process that want one lock, of which one at a time deals with Redis.

FencedLock's plain ``acquire`` and ``release`` go through a cohort (lock cohorting). The first
thread of a process to want the lock queues for it in Redis as usual: it is the cohort's
member. Threads of the same process that come while a member waits or holds wait here, in
arrival order, without a round trip. A member that releases while threads of its process wait
hands the lock to the first of them in Redis directly (``lua/lock_pass.lua``: one round trip,
which also takes the next fencing token, so every holder still has its own) and wakes it here;
that thread is the member now. After ``LOCAL_TURNS`` hand-offs in a row, while other processes
wait in Redis, a member releases through Redis instead: the longest waiter there gets the lock,
and the first thread here queues in Redis behind it.

Redis stays the only judge of who holds the lock: a hand-off happens only if the releaser still
holds it, and when a hand-off fails or its answer is lost the waiter queues in Redis, whose lock
script finds a caller that was handed the lock and did not hear of it. A member whose lease ran
out without a release (a thread that died, or hangs) stops counting once its lease is over: the
first waiter then queues in Redis, which has let the lock go.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

# Hand-offs within a process in a row, while others wait in Redis, before the lock goes back
# to Redis's queue: a waiter in another process waits for at most this many more holders.
# Measured with the benchmark's `lock` scenario (3 processes x 8 threads): 8 gave fewer
# acquisitions/s, 32 no more and twice the p99 wait.
LOCAL_TURNS = 16
# A waiter here looks at least this often whether the member's lease ran out.
CHECK_S = 1.0

_GO = object()  # a turn's outcome: queue in Redis yourself


class Turn:
    """A thread waiting in a cohort: it sleeps on ``_ready`` until told how its wait ended."""

    __slots__ = ("lock", "token", "_ready", "outcome")

    def __init__(self, lock: Any, token: bytes) -> None:
        self.lock = lock  # the waiter's FencedLock: its lease, the replicas it waits for
        self.token = token
        self._ready = threading.Lock()
        self._ready.acquire()
        self.outcome: Any = None  # _GO, or (fencing token, replicated)

    def tell(self, outcome: Any) -> None:
        self.outcome = outcome
        self._ready.release()

    def wait(self, timeout: float | None) -> bool:
        """Whether an outcome came within ``timeout`` seconds (None: it will come)."""
        if self.outcome is not None:  # already told (and perhaps already waited for)
            return True
        return self._ready.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))

    def handed(self) -> tuple[int, bool] | None:
        """(fencing token, replicated) when the lock was handed to this waiter, else None."""
        return None if self.outcome is _GO else self.outcome


class Cohort:
    def __init__(self) -> None:
        self.waiting: deque[Turn] = deque()
        self.members: set[bytes] = set()  # tokens of threads queued in Redis or holding
        self.holder: bytes | None = None  # the member holding the lock
        self.held_until: float | None = None  # monotonic end of its lease (None: no lease)
        self.turns = 0  # hand-offs in a row within the process
        self.others_wait = True  # what the last hand-off saw of Redis's queue


# Keyed by (client, lock name): the client object itself, not its id, so that a cohort left
# behind (its holder never released) can never be taken for one of a new client.
_cohorts: dict[tuple[Any, str], Cohort] = {}
_mutex = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: none of them waits or holds here."""
    global _mutex
    _cohorts.clear()
    _mutex = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


class Member:
    """What a thread does with the cohort of lock ``name`` on ``client`` (one FencedLock)."""

    __slots__ = ("key",)

    def __init__(self, client: Any, name: str) -> None:
        self.key = (client, name)

    def join(self, lock: Any, token: bytes) -> Turn | None:
        """Enter the cohort: None when the caller is its member (it queues in Redis itself),
        else its turn to wait on (``wait``)."""
        with _mutex:
            cohort = _cohorts.get(self.key)
            if cohort is None:
                cohort = _cohorts[self.key] = Cohort()
            if not cohort.members:
                cohort.members.add(token)
                return None
            turn = Turn(lock, token)
            cohort.waiting.append(turn)
            return turn

    def wait(self, turn: Turn, deadline: float | None) -> bool:
        """Wait for a turn's outcome; False when the caller's time ran out first. The first
        waiter also stops waiting once the holder's lease is over: it is then sent to Redis."""
        while True:
            now = time.monotonic()
            timeout = CHECK_S if deadline is None else min(CHECK_S, deadline - now)
            with _mutex:
                cohort = _cohorts.get(self.key)
                if cohort is not None and cohort.waiting and cohort.waiting[0] is turn \
                        and cohort.held_until is not None:
                    timeout = min(timeout, cohort.held_until - now)
            if turn.wait(timeout):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                if self.leave(turn):
                    return False
                turn.wait(None)  # the outcome is on its way
                return True
            with _mutex:
                cohort = _cohorts.get(self.key)
                if cohort is not None and turn in cohort.waiting:
                    if cohort.waiting[0] is turn and cohort.held_until is not None \
                            and time.monotonic() >= cohort.held_until:
                        cohort.members.discard(cohort.holder)
                        cohort.holder = cohort.held_until = None
                        self._go(cohort, [cohort.waiting.popleft()])
                    continue
            turn.wait(None)  # taken off the queue: the outcome is on its way
            return True

    def abandon(self, turn: Turn) -> bool:
        """A waiter was interrupted: it leaves. True if the lock was handed to it (the caller
        then releases it); if it was sent to Redis instead, it steps down there."""
        if self.leave(turn):
            return False
        turn.wait(None)  # the outcome is on its way
        if turn.handed() is not None:
            return True
        self.step_down(turn.token)
        return False

    def leave(self, turn: Turn) -> bool:
        """Take ``turn`` off the queue: False if it was no longer there (an outcome came or
        is on its way)."""
        with _mutex:
            cohort = _cohorts.get(self.key)
            if cohort is None or turn not in cohort.waiting:
                return False
            cohort.waiting.remove(turn)
            self._empty(cohort)
            return True

    def holding(self, token: bytes, lease_s: float | None) -> None:
        """Member ``token`` holds the lock, for ``lease_s`` (None: no lease)."""
        with _mutex:
            cohort = _cohorts.get(self.key)
            if cohort is not None and token in cohort.members:
                cohort.holder = token
                cohort.held_until = None if lease_s is None else time.monotonic() + lease_s

    def next_holder(self, token: bytes) -> Turn | None:
        """The waiter member ``token``, releasing, hands the lock to; None: release in Redis."""
        with _mutex:
            cohort = _cohorts.get(self.key)
            if cohort is None or token not in cohort.members or not cohort.waiting:
                return None
            if cohort.turns >= LOCAL_TURNS and cohort.others_wait:
                return None
            cohort.turns += 1
            cohort.holder = cohort.held_until = None
            return cohort.waiting.popleft()

    def handed_over(self, token: bytes, turn: Turn, fence: int, replicated: bool,
                    others_wait: bool) -> None:
        """Member ``token`` handed the lock to ``turn`` (``lua/lock_pass.lua``; ``others_wait``:
        Redis's queue had waiters then), which is the member in its place."""
        lease_s = turn.lock.timeout
        with _mutex:
            cohort = _cohorts[self.key]
            cohort.members.discard(token)
            cohort.members.add(turn.token)
            cohort.others_wait = others_wait
            # Its lease counts from now, even if its thread never runs again.
            cohort.holder = turn.token
            cohort.held_until = None if lease_s is None else time.monotonic() + lease_s
        turn.tell((fence, replicated))

    def send_to_redis(self, token: bytes, turn: Turn) -> None:
        """Member ``token`` did not hand the lock to ``turn`` (it no longer held it, or the
        answer was lost): ``turn`` queues in Redis, as the member in its place."""
        with _mutex:
            cohort = _cohorts[self.key]
            cohort.members.discard(token)
            self._go(cohort, [turn])

    def step_down(self, token: bytes, everyone: bool = False) -> None:
        """Member ``token`` no longer holds the lock or waits for it in Redis (it released the
        lock there, gave up, or failed). If it was the last, the first waiter goes to Redis in
        its place; ``everyone``: every waiter does (Redis failed: each gets its answer)."""
        with _mutex:
            cohort = _cohorts.get(self.key)
            if cohort is None or token not in cohort.members:
                return
            cohort.members.discard(token)
            if cohort.holder == token:
                cohort.holder = cohort.held_until = None
            cohort.turns = 0
            cohort.others_wait = True
            if everyone:
                self._go(cohort, list(cohort.waiting))
                cohort.waiting.clear()
            elif not cohort.members and cohort.waiting:
                self._go(cohort, [cohort.waiting.popleft()])
            self._empty(cohort)

    @staticmethod
    def _go(cohort: Cohort, turns: list[Turn]) -> None:
        """Send ``turns`` (off the queue) to Redis, as members (under the mutex)."""
        for turn in turns:
            cohort.members.add(turn.token)
            turn.tell(_GO)

    def _empty(self, cohort: Cohort) -> None:
        if not cohort.members and not cohort.waiting:
            del _cohorts[self.key]


def waiting(client: Any, name: str) -> int:
    """How many threads of this process wait here for lock ``name`` on ``client``."""
    with _mutex:
        cohort = _cohorts.get((client, name))
        return len(cohort.waiting) if cohort is not None else 0
