"""Cohorts (service/cohort.py): threads of one process wait for FencedLock in the process, and
a release hands the lock to the first of them in one round trip, with a fencing token of its own.

A second client object stands for another process: cohorts are per client and lock name.
"""

from __future__ import annotations

import threading

import pytest
import redis
from redis.connection import AbstractConnection

from harness.redis_server import RedisServer
from service import cohort
from service.keys import fence_key, queue_key
from service.lock import FencedLock, LockNotOwnedError, LockNotReplicated
from service.redis_client import ReplicaWait

from .backends import BACKENDS
from .waiting import wait_for

every_backend = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)

NAME = "{sku}:lock"


def in_threads(target, count: int, client, name: str = NAME) -> list[threading.Thread]:
    """Start ``count`` threads running ``target(i)``, each once the one before waits here."""
    threads = []
    for i in range(count):
        thread = threading.Thread(target=target, args=(i,))
        thread.start()
        threads.append(thread)
        wait_for(lambda n=i + 1: cohort.waiting(client, name) == n, f"{i + 1} waiting here")
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(30)


def blocked_in_redis(redis_server) -> int:
    with redis_server.server_for(NAME).admin() as admin:
        return admin.info("clients")["blocked_clients"]


@every_backend
def test_threads_of_a_process_wait_in_it_and_are_served_in_arrival_order(redis_server,
                                                                         redis_client):
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    first_fence = holder.fencing_token
    served = []

    def hold_once(i):
        lock = FencedLock(redis_client, NAME, timeout=60)
        assert lock.acquire(blocking_timeout=20)
        served.append((i, lock.fencing_token))
        lock.release()

    threads = in_threads(hold_once, 5, redis_client)
    assert redis_client.llen(queue_key(NAME)) == 0 and blocked_in_redis(redis_server) == 0
    holder.release()
    join_all(threads)
    assert served == [(i, first_fence + 1 + i) for i in range(5)]  # each its own token
    assert not redis_client.exists(NAME) and cohort.waiting(redis_client, NAME) == 0


def round_trips_for_one_waiter(redis_server, redis_client, monkeypatch,
                               local_handoff: bool) -> int:
    """Round trips (sends on a connection, a pipeline is one) from a waiter's arrival until it
    holds the lock, the holder's release included. The second of two runs: the first opens
    the connections and loads the scripts."""
    for _ in range(2):
        holder = FencedLock(redis_client, NAME, timeout=60, local_handoff=local_handoff)
        assert holder.acquire()
        waiter = FencedLock(redis_client, NAME, timeout=60, thread_local=False,
                            local_handoff=local_handoff)
        sends = counting_sends(monkeypatch)
        thread = threading.Thread(target=waiter.acquire, kwargs={"blocking_timeout": 20})
        thread.start()
        wait_for(lambda: cohort.waiting(redis_client, NAME) or blocked_in_redis(redis_server),
                 "the waiter waiting")
        holder.release()
        thread.join(30)
        monkeypatch.undo()
        assert waiter.owned()
        waiter.release()
    return len(sends)


def counting_sends(monkeypatch) -> list[bytes]:
    """Sends on any connection but INFO (``blocked_in_redis``) and a new connection's set-up."""
    sends = []
    send = AbstractConnection.send_packed_command

    def counted(connection, command, *args, **kwargs):
        packed = command if isinstance(command, bytes) else b"".join(command)
        name = packed.split(b"\r\n")[2]
        if name not in (b"INFO", b"HELLO", b"CLIENT", b"AUTH"):
            sends.append(packed)
        return send(connection, command, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return sends


@every_backend
def test_a_hand_off_in_the_process_is_one_round_trip(redis_server, redis_client, monkeypatch):
    assert round_trips_for_one_waiter(redis_server, redis_client, monkeypatch, True) == 1


@every_backend
def test_queueing_in_redis_takes_two(redis_server, redis_client, monkeypatch):
    """The comparison: the waiter's queueing pipeline, then the release that hands over."""
    assert round_trips_for_one_waiter(redis_server, redis_client, monkeypatch, False) == 2


def share_before_another_process(redis_server, redis_client, rounds: int = 60) -> int:
    """Four threads here take the lock again and again (``rounds`` times each) while a waiter
    on another client (another process) queues in Redis: how many turns went to this process
    after that waiter queued and before it got the lock."""
    other_client = redis_server.client(decode_responses=True)
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    turns = []
    other_queued = threading.Event()

    def keep_taking(i):
        lock = FencedLock(redis_client, NAME, timeout=60)
        for _ in range(rounds):
            assert lock.acquire(blocking_timeout=30)
            turns.append("here" if other_queued.is_set() else "before")
            lock.release()

    threads = in_threads(keep_taking, 4, redis_client)
    other = FencedLock(other_client, NAME, timeout=60, thread_local=False)
    thread = threading.Thread(target=lambda: other.acquire(blocking_timeout=30))
    thread.start()
    wait_for(lambda: blocked_in_redis(redis_server) == 1, "the other process waiting in Redis")
    other_queued.set()
    holder.release()
    thread.join(30)
    taken = turns.count("here")  # every turn of this process while the other held counts too
    other.release()
    join_all(threads)
    return taken


@every_backend
def test_another_process_waits_for_at_most_local_turns(redis_server, redis_client):
    assert share_before_another_process(redis_server, redis_client) <= cohort.LOCAL_TURNS


@every_backend
def test_without_the_bound_another_process_waits_for_every_turn(redis_server, redis_client,
                                                                monkeypatch):
    """The control: hand-offs within the process without a bound starve the other process."""
    bound = cohort.LOCAL_TURNS
    monkeypatch.setattr(cohort, "LOCAL_TURNS", 10**6)
    with pytest.raises(AssertionError):
        assert share_before_another_process(redis_server, redis_client) <= bound


@every_backend
def test_a_waiter_that_gives_up_leaves_the_process_queue(redis_client):
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    assert not FencedLock(redis_client, NAME, timeout=60).acquire(blocking_timeout=0.05)
    assert cohort.waiting(redis_client, NAME) == 0
    holder.release()
    assert not redis_client.exists(NAME)  # not handed to the waiter that left


@every_backend
def test_a_holder_that_lost_the_lock_hands_nothing_over(redis_server, redis_client):
    """Another process took the lock while the holder's lease was over: the release fails,
    and the waiter here queues in Redis instead of believing it holds the lock."""
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    waiter = FencedLock(redis_client, NAME, timeout=60, thread_local=False)
    got = []
    thread, = in_threads(lambda i: got.append(waiter.acquire(blocking_timeout=20)), 1,
                         redis_client)
    redis_client.set(NAME, "another-process", px=500)
    with pytest.raises(LockNotOwnedError):
        holder.release()
    wait_for(lambda: blocked_in_redis(redis_server) == 1, "the waiter waiting in Redis")
    assert got == [] and redis_client.get(NAME) == "another-process"
    thread.join(30)  # it takes the lock once the other's lease is over
    assert got == [True] and redis_client.get(NAME) == waiter.local.token.decode()
    assert waiter.fencing_token == int(redis_client.get(fence_key(NAME)))


def test_a_hand_off_the_replicas_do_not_confirm_is_given_back(redis_client):
    """No replica here: a waiter that asks for one is handed the lock, gives it back, raises."""
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    waiter = FencedLock(redis_client, NAME, timeout=60, wait=ReplicaWait(1, 20))
    raised = []

    def acquire(i):
        try:
            waiter.acquire(blocking_timeout=20)
        except LockNotReplicated as exc:
            raised.append(exc)

    thread, = in_threads(acquire, 1, redis_client)
    holder.release()
    thread.join(30)
    assert len(raised) == 1 and not redis_client.exists(NAME)
    assert cohort.waiting(redis_client, NAME) == 0


def test_when_redis_fails_every_waiter_of_the_process_hears_of_it():
    """The member waiting in Redis gets the error, and every thread behind it gets its own at
    once, instead of waiting here until its time is up."""
    with RedisServer() as server:
        client = server.client(socket_timeout=1, socket_connect_timeout=1)
        assert FencedLock(server.client(), NAME, timeout=60).acquire()  # another process
        outcomes = []

        def acquire(i):
            try:
                outcomes.append(FencedLock(client, NAME, timeout=60).acquire(blocking_timeout=60))
            except redis.RedisError as exc:
                outcomes.append(type(exc))

        member = threading.Thread(target=acquire, args=(-1,))
        member.start()
        with server.admin() as admin:
            wait_for(lambda: admin.info("clients")["blocked_clients"] == 1, "the member waiting")
        threads = in_threads(acquire, 3, client)
        server.stop()
        join_all([member, *threads])
        assert len(outcomes) == 4 and all(isinstance(o, type) for o in outcomes)
        assert all(issubclass(o, redis.ConnectionError) for o in outcomes)


@every_backend
def test_a_waiter_interrupted_as_the_lock_reaches_it_passes_it_on(redis_client, monkeypatch):
    """An exception (a KeyboardInterrupt, say) right after the hand-off: the lock goes on to
    the next waiter, not to a thread that no longer waits for it."""
    holder = FencedLock(redis_client, NAME, timeout=60)
    assert holder.acquire()
    wait = cohort.Member.wait

    def interrupted_first(member, turn, deadline):
        handed = wait(member, turn, deadline)
        if threading.current_thread().name == "first":
            raise RuntimeError("interrupted")
        return handed

    monkeypatch.setattr(cohort.Member, "wait", interrupted_first)
    outcomes = {}

    def acquire(name):
        lock = FencedLock(redis_client, NAME, timeout=60)
        try:
            outcomes[name] = lock.acquire(blocking_timeout=5)
        except RuntimeError:
            outcomes[name] = "interrupted"
        if outcomes[name] is True:
            lock.release()

    threads = []
    for count, name in enumerate(["first", "second"], start=1):
        threads.append(threading.Thread(target=acquire, args=(name,), name=name))
        threads[-1].start()
        wait_for(lambda n=count: cohort.waiting(redis_client, NAME) == n, f"{count} waiting")
    holder.release()
    join_all(threads)
    assert outcomes == {"first": "interrupted", "second": True}
    assert not redis_client.exists(NAME)
