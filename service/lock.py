"""FencedLock: redis-py's ``Lock`` with fencing tokens and a first-come-first-served hand-off.

A drop-in for ``redis.lock.Lock`` (``client.lock(name, lock_class=FencedLock)`` works, and
``name`` holds the holder's token as its plain value). What it adds:

* Every acquisition takes the next value of a per-lock counter, atomically with the acquire,
  and exposes it as ``fencing_token``. Storage that only accepts writes carrying the newest
  token (``lua/commit_order.lua``) refuses a holder whose lease ran out while it was paused.
* Waiters queue in arrival order and each blocks (BLPOP) on its own grant list. A release
  hands the lock straight to the longest waiter and pushes its fencing token there, so the
  waiter wakes up holding the lock: no polling, no race against newcomers, one round trip
  saved per hand-off. A waiter never blocks past the holder's lease, so a holder that died
  without releasing costs at most one lease (see ``lua/lock_handoff.lua``).
* A plain ``acquire`` and ``release`` go through the process's cohort (``service.cohort``):
  one thread per process queues in Redis, the others wait in the process, and a release hands
  the lock to the next of them in one round trip, up to ``cohort.LOCAL_TURNS`` in a row while
  other processes wait. Each holder still gets its own fencing token.

Two additions serve callers that count round trips: ``acquire_and_read`` takes the lock,
waits for it if it is held and runs reads right after the acquisition, all in one round trip
(the acquire script, a BLPOP and the reads in one pipeline); and a script can release the
lock as its last step (``keys`` and ``handoff_args``, then ``forget``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.client import Pipeline
from redis.exceptions import (
    ConnectionError,
    LockError,
    LockNotOwnedError,
    NoScriptError,
    TimeoutError,
)
from redis.lock import Lock

from . import cohort, scripts
from .keys import grant_prefix, lock_keys
from .redis_client import ReplicaWait, execute_on_master, master_of
from .watchdog import WATCHDOG

try:  # what a connection uses when the client was built without a socket_timeout
    from redis._defaults import DEFAULT_SOCKET_TIMEOUT
except ImportError:  # older redis-py: no timeout
    DEFAULT_SOCKET_TIMEOUT = None

__all__ = ["FencedLock", "LockError", "LockNotOwnedError", "LockNotReplicated", "holder_token",
           "held_by"]

log = logging.getLogger(__name__)

# A waiter's single block must end before the client's socket timeout would fire.
_SOCKET_TIMEOUT_SHARE = 0.5
# Redis truncates a BLPOP timeout to whole milliseconds, and 0 means "forever": shorter waits
# (a lease about to end, a caller about to give up) sleep instead of blocking.
MIN_BLOCK_S = 0.01
# A waiter wakes at least this often to renew its place in the queue; a waiter that died is
# dropped once its registration (one wait plus the grace) runs out.
MAX_BLOCK_S = 5.0
REGISTRATION_GRACE_S = 1.0
# Between calls again after a waiter lost an answer: a Redis that refuses connections is not
# hammered in a loop for the rest of the wait.
RETRY_PAUSE_S = 0.02
# Calls again (RETRY_PAUSE_S apart) after a failed first call, before giving up: the answer may
# have been lost after the script ran. Few, so that a Redis that is down gets a prompt 503.
UNQUEUED_RETRIES = 2
_NOT_QUEUED = -1
# lock_acquire.lua's first reply: the caller holds the lock; another does, and an answer key
# exists (the caller is not queued).
_HELD, _ANSWERED = 1, 2


class LockNotReplicated(LockError):
    """The lock was taken, but fewer replicas than ``wait`` asks for acknowledged it in time;
    it was given back (a fail-over now could hand it, or its fencing token, to another)."""


def holder_token(holder: str) -> str:
    """A fresh lock token naming its holder, so `GET <lock key>` tells who holds the lock."""
    return f"{holder}/{uuid.uuid4().hex}"


def new_token() -> bytes:
    """A lock token: 128 random bits. A token must be unique, not secret (whoever reaches the
    lock's Redis can delete the lock anyway): the process's PRNG, seeded from the OS and
    reseeded in a forked child, costs a fraction of redis-py's uuid1 (10 us) or a getrandom
    call."""
    return b"%032x" % random.getrandbits(128)


def held_by(token: str | None, holder: str) -> bool:
    """Whether ``token`` (a lock key's value) was made by ``holder_token(holder)``."""
    return bool(token) and token.startswith(holder + "/")


class FencedLock(Lock):
    lua_fenced_acquire = None
    lua_handoff_release = None
    lua_cancel_wait = None
    lua_pass = None

    def __init__(self, redis, name: str, *args, renew: bool = False,
                 wait: ReplicaWait | None = None, wait_mark: str | None = None,
                 local_handoff: bool = True, **kwargs) -> None:
        """As ``Lock``; with ``renew`` (and a ``timeout``), a watchdog extends the lease every
        timeout/3 for as long as the holder holds the lock (see ``service.watchdog``). With
        ``wait`` asking for replicas, an acquisition counts only once that many replicas have
        it (WAIT in the acquire's round trip): its fencing token then survives a fail-over.
        ``wait_mark``: a key of the lock's slot that is INCRed before that WAIT, so it also
        covers what the reads behind the acquire saw (see ``ReplicaWait.queue``).
        ``local_handoff``: a blocking ``acquire`` waits behind the threads of its own process
        in the process, and ``release`` hands the lock to them first (see ``service.cohort``);
        False: every thread queues in Redis."""
        super().__init__(redis, name, *args, **kwargs)
        self.local_handoff = local_handoff
        self.cohort = cohort.Member(redis, name)
        self.wait = wait or ReplicaWait()
        self.wait_mark = wait_mark
        self.keys = lock_keys(name)
        self.grant_prefix = grant_prefix(name)
        self.renew = renew and bool(self.timeout)
        self.local.fencing_token = None
        self.local.watch = None
        self.local.member = False  # holds the lock as a member of its cohort

    def register_scripts(self) -> None:
        """Lock's scripts and ours, as ``SlotScript``s (see ``service.scripts``).

        ``lua_fenced_acquire`` is published last: a lock built in another thread meanwhile
        sees it unset and registers them all itself, never a half-registered set.
        """
        cls = self.__class__
        if cls.lua_fenced_acquire is None:
            client = self.redis
            extend = scripts.register(client, cls.LUA_EXTEND_SCRIPT)
            reacquire = scripts.register(client, cls.LUA_REACQUIRE_SCRIPT)
            release = scripts.register(client, scripts.source("lock_release"))
            cancel = scripts.register(client, scripts.source("lock_cancel"))
            handoff = scripts.register(client, scripts.source("lock_pass"))
            acquire = scripts.register(client, scripts.source("lock_acquire"))
            cls.lua_extend, cls.lua_reacquire = extend, reacquire
            cls.lua_handoff_release, cls.lua_cancel_wait = release, cancel
            cls.lua_pass = handoff
            cls.lua_fenced_acquire = acquire

    @classmethod
    def scripts(cls) -> tuple:
        """Every script of the lock (after ``register_scripts``)."""
        return (cls.lua_extend, cls.lua_reacquire, cls.lua_handoff_release,
                cls.lua_cancel_wait, cls.lua_pass, cls.lua_fenced_acquire)

    @property
    def fencing_token(self) -> int | None:
        """The token of this holder's current acquisition; None when it does not hold the lock."""
        return getattr(self.local, "fencing_token", None)

    def _lease_ms(self) -> int:
        return math.ceil(self.timeout * 1000) if self.timeout else 0

    def _run(self, script, token: bytes | str, *extra: object):
        return script(keys=self.keys, args=[token, self._lease_ms(), self.grant_prefix, *extra],
                      client=self.redis)

    def _run_own(self, script, token: bytes, *extra: object):
        """``_run`` for the scripts that also declare the caller's own grant list (KEYS[5])."""
        return script(keys=[*self.keys, self._grant_list(token)],
                      args=[token, self._lease_ms(), self.grant_prefix, *extra],
                      client=self.redis)

    def _grant_list(self, token: bytes) -> bytes:
        return self.grant_prefix.encode() + token

    def _held(self, token: bytes, fencing_token: int) -> bool:
        self.local.token = token
        self.local.fencing_token = int(fencing_token)
        if self.renew:
            self.local.watch = WATCHDOG.watch(self, token, self._lease_ms())
        return True

    def handoff_args(self) -> list[Any]:
        """ARGV[1..3] of a script that releases this lock itself (see lock_handoff.lua): this
        holder's token, the lease, the grant prefix. Its KEYS[1..4] are ``keys``."""
        return [self.local.token, self._lease_ms(), self.grant_prefix]

    def forget(self) -> None:
        """A script released the lock (or it was lost): this object no longer holds it."""
        token = getattr(self.local, "token", None)
        if self._clear():
            self.cohort.step_down(token)

    def _clear(self) -> bool:
        """Forget the holder's state; whether it held the lock as a member of its cohort."""
        self.local.token = None
        self.local.fencing_token = None
        watch, self.local.watch = getattr(self.local, "watch", None), None
        if watch is not None:
            WATCHDOG.unwatch(watch)
        member, self.local.member = getattr(self.local, "member", False), False
        return member

    def acquire(
        self,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
    ) -> bool:
        """Acquire the lock, as ``Lock.acquire``; a blocked caller is handed it in turn.

        ``sleep`` bounds one wait for the hand-off (redis-py's meaning, a poll interval, has no
        use here); by default a wait lasts until the holder's lease ends. With
        ``local_handoff``, a blocking caller first waits behind the threads of its process that
        want the lock (``service.cohort``).
        """
        blocking = self.blocking if blocking is None else blocking
        if not (blocking and self.local_handoff):
            return self.acquire_and_read(None, sleep, blocking, blocking_timeout, token) is not None
        token, deadline = self._token_and_deadline(token, blocking_timeout)
        turn = self.cohort.join(self, token)
        if turn is not None:  # a thread of this process is ahead, in Redis or holding
            try:
                if not self.cohort.wait(turn, deadline):
                    return False
            except BaseException:  # interrupted: leave, and pass the lock on if it came
                if self.cohort.abandon(turn):
                    self._held(token, turn.handed()[0])
                    self.local.member = True
                    with contextlib.suppress(Exception):  # the interruption is the news
                        self.release()
                raise
            if (handed := turn.handed()) is not None:
                fence, replicated = handed
                self._held(token, fence)
                self.local.member = True  # the cohort recorded it at the hand-off
                if not replicated:  # give it back, as the acquire script's path does
                    with contextlib.suppress(Exception):
                        self.release()
                    self._check_replicated(replicated)
                return True
            # Sent to Redis: this thread is the cohort's member there now.
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            acquired = self.acquire_and_read(None, sleep, True, remaining, token) is not None
        except BaseException:
            self.cohort.step_down(token, everyone=True)
            raise
        if acquired:
            self.local.member = True
            self.cohort.holding(token, self.timeout)
        else:
            self.cohort.step_down(token)
        return acquired

    def _token_and_deadline(self, token: str | None,
                            blocking_timeout: float | None) -> tuple[bytes, float | None]:
        """The caller's token (a new one if None), encoded; when its wait ends (monotonic)."""
        token = new_token() if token is None else self.redis.get_encoder().encode(token)
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        return token, None if blocking_timeout is None else time.monotonic() + blocking_timeout

    def acquire_and_read(
        self,
        queue_reads: Callable[[Pipeline], None] | None,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: str | None = None,
        answer_keys: Sequence[str] = (),
        answered: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any] | None:
        """Acquire as ``acquire``, then run the commands ``queue_reads`` puts on a pipeline.

        Returns their replies (read while holding the lock), or None if not acquired. One round
        trip when the lock is free, or handed over within one wait (at most half the client's
        socket timeout): the acquire script, a BLPOP on the caller's grant list and the reads
        go in one pipeline on one connection. The script pushes the grant there itself when
        the lock is free, so the BLPOP returns at once; when it is held, the BLPOP waits for
        the hand-off, and Redis runs the reads the moment the lock is handed over.

        ``answer_keys`` (keys of the lock's slot) and ``answered``: when the lock is held and
        one of the keys exists (a request recorded earlier), the caller leaves the queue at
        once, and if ``answered`` agrees that the replies answer it, gets them back without
        holding the lock. (The script sees the key, the replies are read after it: a record
        that expired in between sends the caller back to the queue.)
        """
        token, deadline = self._token_and_deadline(token, blocking_timeout)
        blocking = self.blocking if blocking is None else blocking
        grant_list = self._grant_list(token)
        queued = False  # this caller waits in the lock's queue (it got an answer saying so)
        unqueued_failures = 0
        try:
            while True:
                try:
                    # The longest block this call may take; None: acquire alone, no BLPOP.
                    block = self._wait_bound(sleep, -1, deadline) if blocking else None
                    if block is not None and block < MIN_BLOCK_S:
                        block = None
                    status, value, granted, reads, replicated = self._acquire_then_read(
                        token, self._registration_ms(blocking, sleep, deadline), queue_reads,
                        block, answer_keys)
                    if status == _HELD or (granted is not None and granted > 0):
                        self._held(token, value if status == _HELD else granted)
                        self._check_replicated(replicated)
                        return reads
                    if status == _ANSWERED:  # the script saw an answer key; not queued
                        if answered is not None and not answered(reads):
                            continue  # the record went before it was read: queue again
                        # The answer is a record read on this master: only as good as the
                        # replicas that have it.
                        self._check_replicated(replicated)
                        return reads
                    if not blocking:
                        return None
                    queued = True
                    if block is not None and granted is None:
                        continue  # blocked as long as it may: call again, and stay queued
                    # The holder's lease ends before a block would (or there was no time for
                    # one): wait for that, no longer.
                    wait = self._wait_bound(sleep, int(value), deadline)
                    if wait is None:
                        self._run_own(self.lua_cancel_wait, token)
                        return None
                    if wait < MIN_BLOCK_S:
                        time.sleep(wait)
                        continue
                    pipe = self._pipeline()
                    pipe.blpop([grant_list], timeout=wait)
                    if queue_reads is not None:
                        queue_reads(pipe)
                    # The hand-off's writes (the grant, the fencing counter) are the
                    # releaser's; WAIT here covers them, as BLPOP's pop is this connection's.
                    waits = self.wait.queue(pipe, self.wait_mark)
                    handed, *reads = execute_on_master(self.redis, pipe)
                    acknowledged = reads[-1] if waits else None
                    reads = reads[:len(reads) - waits]
                    if handed and int(handed[1]) > 0:
                        self._held(token, handed[1])
                        self._check_replicated(acknowledged is None
                                               or self.wait.confirmed(acknowledged))
                        return reads
                except (ConnectionError, TimeoutError) as exc:
                    # A lost answer while waiting is not the caller's failure while it has
                    # time left: it calls again. Had the answer carried the lock (taken, or
                    # handed over and popped), the lock sits on this token: the next call
                    # finds the caller holding it and says so (see lock_acquire.lua). A caller
                    # that never got into the queue calls again only UNQUEUED_RETRIES times:
                    # Redis is likely down, and retrying until the deadline would only delay
                    # the 503.
                    holding = getattr(self.local, "token", None) is not None
                    if not queued:
                        unqueued_failures += 1
                    if holding or unqueued_failures > UNQUEUED_RETRIES or deadline is None \
                            or time.monotonic() >= deadline:
                        raise
                    log.debug("lock %s: wait interrupted (%s), waiting on", self.name, exc)
                    time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
        except BaseException:
            # Leave the queue, and pass the lock on if it reached us: a failure here must
            # not leave it handed to nobody.
            self._give_up(token)
            self.forget()
            raise

    def _registration_ms(self, blocking: bool, sleep: float | None,
                         deadline: float | None) -> int:
        """How long the queue should count on this caller: its longest block, plus a grace.

        A waiter that failed (or died) stops renewing this, so the queue drops it that soon,
        instead of handing it the lock for a whole lease.
        """
        if not blocking:
            return _NOT_QUEUED
        longest_block = self._wait_bound(sleep, -1, None)
        waited = self.wait.timeout_ms / 1000 if self.wait.replicas else 0.0  # WAIT after it
        until_next_call = longest_block + waited + REGISTRATION_GRACE_S
        if deadline is not None:
            until_next_call = min(until_next_call, deadline - time.monotonic())
        return max(1, math.ceil(until_next_call * 1000))

    def _pipeline(self) -> Pipeline:
        """A pipeline on the lock's own Redis: on a cluster, the master that serves the lock
        (``master_of``), so a pipeline's commands stay in order on one connection (reads
        queued behind the acquire or the BLPOP run after it, and WAIT counts its writes), and
        nothing is re-sent after a connection error as a cluster pipeline would. Keys of other
        slots get MOVED there: an error, not a wrong read."""
        return master_of(self.redis, self.name).pipeline(transaction=False)

    def _check_replicated(self, replicated: bool) -> None:
        if not replicated:
            raise LockNotReplicated(
                f"fewer than {self.wait.replicas} replicas acknowledged the lock "
                f"{self.name!r} within {self.wait.timeout_ms} ms")

    def _acquire_then_read(self, token: bytes, registration_ms: int,
                           queue_reads: Callable[[Pipeline], None] | None,
                           block: float | None, answer_keys: Sequence[str],
                           ) -> tuple[int, int, int | None, list[Any], bool]:
        """The acquire script, with ``block`` a BLPOP on the caller's grant list behind it, and
        the reads, in one round trip: (the script's status: _HELD, _ANSWERED or 0, fencing
        token or holder's PTTL, what the BLPOP popped (None: nothing, or no BLPOP), replies of
        the reads, whether enough replicas have it: a WAIT rides behind them when ``wait`` asks
        for replicas).

        EVALSHA, not a pipelined ``Script`` (redis-py would add a SCRIPT EXISTS round trip);
        on NOSCRIPT the acquire did not run, so it is loaded where the pipeline goes and sent
        again. The BLPOP also watches a marker list filled just before the script, which the
        script empties as its last step: when the script did not run to its end, the BLPOP
        ends at once instead of blocking for nothing.
        """
        script = self.lua_fenced_acquire
        grant_list = self._grant_list(token)
        args = [token, self._lease_ms(), self.grant_prefix, registration_ms]
        if block is None:
            keys = [*self.keys, grant_list, *answer_keys]
        else:
            marker = grant_list + b":unrun"
            keys = [*self.keys, grant_list, marker, *answer_keys]
            args.append(math.ceil(block * 1000))
        for attempt in range(2):
            pipe = self._pipeline()
            if block is not None:
                pipe.rpush(marker, 1)
                pipe.pexpire(marker, registration_ms)  # gone with the caller's registration
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            if block is not None:
                pipe.blpop([grant_list, marker], timeout=block)
            if queue_reads is not None:
                queue_reads(pipe)
            waits = self.wait.queue(pipe, self.wait_mark)
            replies = execute_on_master(self.redis, pipe, raise_on_error=False)
            if block is not None:
                replies = replies[2:]  # the marker's RPUSH and PEXPIRE
            if attempt or not isinstance(replies[0], NoScriptError):
                break
            script.load(self.redis, keys)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        acknowledged = replies[-1] if waits else None
        (status, value), *reads = replies[:len(replies) - waits]
        popped = None
        if block is not None:
            blocked, *reads = reads
            if blocked is not None and self.redis.get_encoder().encode(blocked[0]) == grant_list:
                popped = int(blocked[1])  # from the grant list, not the marker
        return (status, value, popped, reads,
                acknowledged is None or self.wait.confirmed(acknowledged))

    def _give_up(self, token: bytes) -> None:
        """Leave the queue after a failure, so the lock is not handed to nobody."""
        try:
            self._run_own(self.lua_cancel_wait, token)
        except Exception:  # Redis is what failed: the registration runs out within seconds
            pass

    def _wait_bound(
        self, sleep: float | None, holder_pttl: int, deadline: float | None
    ) -> float | None:
        """Seconds to block for the hand-off now; None when the caller's time is up."""
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
        bounds.append(MAX_BLOCK_S)
        socket_timeout = self.redis.get_connection_kwargs().get(
            "socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        if socket_timeout:  # the WAIT behind the BLPOP, if any, must fit in it too
            after = self.wait.timeout_ms / 1000 if self.wait.replicas else 0.0
            bounds.append((socket_timeout - after) * _SOCKET_TIMEOUT_SHARE)
        return max(min(bounds), 0.0005)  # never a busy spin

    def do_release(self, expected_token: str) -> None:
        member = self._clear()
        if member and (turn := self.cohort.next_holder(expected_token)) is not None:
            self._hand_to(turn, expected_token)
            return
        try:
            released = self._run(self.lua_handoff_release, expected_token)
        finally:
            if member:
                self.cohort.step_down(expected_token)
        if not released:
            raise self._not_owned()

    def _hand_to(self, turn: cohort.Turn, expected_token: bytes) -> None:
        """Hand the lock to a waiter of this process (``lua/lock_pass.lua``) with its lease
        and, if it asks for replicas, a WAIT in the same round trip, then wake it. If this
        holder no longer holds the lock, or the answer is lost, the waiter queues in Redis."""
        waiter = turn.lock
        try:
            (fence, queued), replicated = self.lua_pass.call_and_wait(
                self.keys, [expected_token, waiter._lease_ms(), self.grant_prefix, turn.token],
                waiter.wait, self.redis, waiter.wait_mark)
        except BaseException:
            self.cohort.send_to_redis(expected_token, turn)
            raise
        if not fence:
            self.cohort.send_to_redis(expected_token, turn)
            raise self._not_owned()
        self.cohort.handed_over(expected_token, turn, int(fence), replicated, int(queued) > 0)

    def _not_owned(self) -> LockNotOwnedError:
        return LockNotOwnedError("Cannot release a lock that's no longer owned",
                                 lock_name=self.name)
