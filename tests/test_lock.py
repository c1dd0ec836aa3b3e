"""FencedLock against a real Redis: a drop-in for redis-py's Lock, plus fencing and wake-up."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.lock import Lock
from redis.retry import Retry

from harness.redis_server import admin_client
from service.keys import fence_key, lock_keys
from service.lock import FencedLock, LockError, LockNotOwnedError

from .backends import BACKENDS
from .waiting import wait_for

# Every lock test runs on one redis-server, on a 3-master Redis Cluster, and as an ACL user.
pytestmark = pytest.mark.parametrize("redis_server", BACKENDS, indirect=True)

COUNTER = "counter"


def test_drop_in_for_redis_lock(redis_client):
    lock = redis_client.lock("{sku}:lock", timeout=5, lock_class=FencedLock)
    assert isinstance(lock, FencedLock) and isinstance(lock, Lock)
    assert lock.acquire(blocking=False)
    assert redis_client.get("{sku}:lock") == lock.local.token.decode()
    assert lock.locked() and lock.owned()
    assert 0 < redis_client.pttl("{sku}:lock") <= 5000
    lock.release()
    assert not lock.locked() and not lock.owned()
    with pytest.raises(LockError):
        lock.release()


def test_given_token_and_context_manager(redis_client):
    lock = FencedLock(redis_client, "named", timeout=5)
    assert lock.acquire(token="my-token")
    assert redis_client.get("named") == "my-token"
    lock.release()
    with FencedLock(redis_client, "named", timeout=5) as held:
        assert held.owned()
    assert not redis_client.exists("named")


def test_fencing_tokens_increase_with_every_acquisition(redis_client):
    lock = FencedLock(redis_client, "{sku}:lock", timeout=5)
    tokens = []
    for _ in range(3):
        lock.acquire()
        tokens.append(lock.fencing_token)
        lock.release()
        assert lock.fencing_token is None
    assert tokens == [1, 2, 3]
    assert redis_client.get(fence_key("{sku}:lock")) == "3"


def test_non_blocking_acquire_fails_while_held(redis_client):
    holder = FencedLock(redis_client, "l", timeout=5)
    other = FencedLock(redis_client, "l", timeout=5)
    assert holder.acquire()
    assert not other.acquire(blocking=False)
    assert not other.acquire(blocking_timeout=0.05)
    assert other.fencing_token is None


def test_lease_expiry_frees_the_lock(redis_client):
    holder = FencedLock(redis_client, "l", timeout=0.1)
    holder.acquire()
    other = FencedLock(redis_client, "l", timeout=5)
    assert other.acquire(blocking_timeout=5)  # woken by the bound on the holder's lease
    with pytest.raises(LockNotOwnedError):
        holder.release()
    assert other.owned()


def test_release_and_extend_check_the_token(redis_client):
    lock = FencedLock(redis_client, "l", timeout=1)
    lock.acquire()
    redis_client.set("l", "someone-else")
    with pytest.raises(LockNotOwnedError):
        lock.extend(1)
    with pytest.raises(LockNotOwnedError):
        lock.reacquire()
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert redis_client.get("l") == "someone-else"


def test_extend_and_reacquire_keep_the_fencing_token(redis_client):
    lock = FencedLock(redis_client, "l", timeout=1)
    lock.acquire()
    token = lock.fencing_token
    lock.extend(10)
    assert redis_client.pttl("l") > 5000
    lock.reacquire()
    assert redis_client.pttl("l") <= 1000
    assert lock.fencing_token == token


def increment_many(client: redis.Redis, n: int, use_lock: bool) -> None:
    """Read, pause, write: loses updates unless the lock excludes the others."""
    lock = FencedLock(client, "counter-lock", timeout=10, blocking_timeout=30)
    for _ in range(n):
        if use_lock:
            lock.acquire()
        value = int(client.get(COUNTER) or 0)
        time.sleep(0.0005)
        client.set(COUNTER, value + 1)
        if use_lock:
            lock.release()


def run_threads(client, threads, n, use_lock):
    workers = [threading.Thread(target=increment_many, args=(client, n, use_lock))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    return int(client.get(COUNTER))


def test_mutual_exclusion_between_threads(redis_client):
    assert run_threads(redis_client, threads=8, n=25, use_lock=True) == 200


def test_without_the_lock_threads_lose_updates(redis_client):
    with pytest.raises(AssertionError):
        assert run_threads(redis_client, threads=8, n=25, use_lock=False) == 200


def _process_main(url: str, cluster: bool, password: str | None, threads: int, n: int,
                  use_lock: bool) -> None:
    client = admin_client(url, cluster, password=password)
    run_threads(client, threads, n, use_lock)


def run_processes(redis_server, processes, threads, n, use_lock):
    url, cluster, password = redis_server.url, redis_server.cluster, redis_server.service_password
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_process_main,
                               args=(url, cluster, password, threads, n, use_lock))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with redis_server.client() as client:
        return int(client.get(COUNTER))


def test_mutual_exclusion_between_processes(redis_server, redis_client):
    assert run_processes(redis_server, processes=3, threads=4, n=15, use_lock=True) == 180


def test_without_the_lock_processes_lose_updates(redis_server, redis_client):
    with pytest.raises(AssertionError):
        assert run_processes(redis_server, processes=3, threads=4, n=15,
                             use_lock=False) == 180


def wait_until_blocked(redis_server, count: int, key: str = "l") -> None:
    """Until ``count`` clients are blocked in BLPOP on the server of ``key`` (bounded)."""
    with redis_server.server_for(key).admin() as client:
        for _ in range(2000):
            if client.info("clients")["blocked_clients"] >= count:
                return
            time.sleep(0.005)
    raise AssertionError(f"{count} waiters never blocked")


def test_release_wakes_a_waiter_that_a_poll_would_miss(redis_server, redis_client):
    """Lease 60 s, waiter gives up after 5 s: only the release's signal can hand it the lock.
    (``local_handoff=False`` here and below: these threads stand for processes, and queue in
    Redis; threads of one process wait in it, see test_cohort.py.)"""
    holder = FencedLock(redis_client, "l", timeout=60, local_handoff=False)
    holder.acquire()
    waiter = FencedLock(redis_client, "l", timeout=60, local_handoff=False)
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking_timeout=5)))
    thread.start()
    wait_until_blocked(redis_server, 1)
    holder.release()
    thread.join(10)
    assert got == [True]


def test_a_polling_lock_misses_the_same_release(redis_client):
    """The control: redis-py's Lock sleeping between polls cannot see the release in time."""
    holder = Lock(redis_client, "l", timeout=60)
    holder.acquire()
    waiter = Lock(redis_client, "l", timeout=60, sleep=10)
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking_timeout=5)))
    thread.start()
    time.sleep(0.2)
    holder.release()
    thread.join(10)
    with pytest.raises(AssertionError):
        assert got == [True]


def test_waiters_are_served_in_arrival_order(redis_server, redis_client):
    holder = FencedLock(redis_client, "l", timeout=60, local_handoff=False)
    holder.acquire()
    order = []

    def wait_then_hold(name):
        lock = FencedLock(redis_client, "l", timeout=60, local_handoff=False)
        assert lock.acquire(blocking_timeout=20)
        order.append(name)
        lock.release()

    threads = []
    for i in range(5):
        thread = threading.Thread(target=wait_then_hold, args=(i,))
        thread.start()
        threads.append(thread)
        wait_until_blocked(redis_server, i + 1)
    holder.release()
    for thread in threads:
        thread.join(30)
    assert order == [0, 1, 2, 3, 4]


def test_waiters_get_a_lease_that_is_about_to_end(redis_server, redis_client):
    """Leases of a few ms: waiters see PTTLs of 0-2 ms, too short for a BLPOP to block on."""
    client = redis_server.client(socket_timeout=1)
    for lease in [0.001, 0.002, 0.003, 0.005] * 10:
        holder = FencedLock(client, "short", timeout=lease)
        holder.acquire()  # and never released: only the lease ends it
        waiter = FencedLock(client, "short", timeout=5)
        assert waiter.acquire(blocking_timeout=0.5)
        waiter.release()


def test_a_short_wait_gives_up_on_time(redis_client):
    FencedLock(redis_client, "held", timeout=60).acquire()
    waiter = FencedLock(redis_client, "held", timeout=5)
    for blocking_timeout in [0.0001, 0.001, 0.005, 0.02]:
        assert not waiter.acquire(blocking_timeout=blocking_timeout)


@pytest.mark.slow
def test_waits_longer_than_the_default_socket_timeout(redis_server):
    """A client built without socket_timeout reads with redis-py's default (5 s): a waiter must
    wait in shorter blocks, not time out its own connection."""
    client = redis_server.client()
    holder = FencedLock(client, "long", timeout=60, thread_local=False)  # released by a timer
    holder.acquire()
    releaser = threading.Timer(6, holder.release)
    releaser.start()
    try:
        assert FencedLock(client, "long", timeout=5).acquire(blocking_timeout=10)
    finally:
        releaser.join()


def test_a_lease_under_a_millisecond_still_expires(redis_client):
    lock = FencedLock(redis_client, "tiny", timeout=0.0004)
    lock.acquire()
    assert redis_client.pttl("tiny") in (0, 1) or not redis_client.exists("tiny")


def test_reads_ride_on_the_hand_off_and_see_the_holders_last_write(redis_server, redis_client):
    # The read key shares the lock's slot, as the service's keys do: on a cluster, a pipeline
    # only keeps the order of commands that go to one node.
    x = "{l}:x"
    holder = FencedLock(redis_client, "l", timeout=60)
    assert holder.acquire_and_read(lambda pipe: pipe.get(x)) == [None]  # uncontended path
    got = []
    waiter = FencedLock(redis_client, "l", timeout=60, thread_local=False)  # checked from here
    thread = threading.Thread(target=lambda: got.append(
        waiter.acquire_and_read(lambda pipe: pipe.get(x), blocking_timeout=10)))
    thread.start()
    wait_until_blocked(redis_server, 1)
    redis_client.set(x, "written by the holder")
    holder.release()
    thread.join(10)
    assert got == [["written by the holder"]]
    assert waiter.owned() and waiter.fencing_token == holder_token_after(redis_client)


def test_reads_ride_on_the_acquire_after_a_script_flush(redis_server, redis_client):
    """NOSCRIPT in the acquire's pipeline: the acquire did not run; loaded, it runs once."""
    x = "{l}:x"
    redis_client.set(x, "before the flush")
    first = FencedLock(redis_client, "l", timeout=5)
    assert first.acquire_and_read(lambda pipe: pipe.get(x)) == ["before the flush"]
    first.release()
    with redis_server.server_for("l").admin() as node:
        node.script_flush()
    lock = FencedLock(redis_client, "l", timeout=5)
    assert lock.acquire_and_read(lambda pipe: pipe.get(x)) == ["before the flush"]
    assert lock.fencing_token == 2 == holder_token_after(redis_client)
    lock.release()


def holder_token_after(client):
    return int(client.get(fence_key("l")))


def test_a_waiter_whose_redis_call_fails_leaves_the_queue(redis_server, redis_client):
    """Redis stalls past the waiter's deadline, so its calls time out and it gives up: it must
    not be handed the lock later, or the next waiter would wait out a whole lease for nobody."""
    holder = FencedLock(redis_client, "l", timeout=30)
    holder.acquire()
    # No retries, as the service's client: a retried call would hide the failure.
    flaky = redis_server.client(socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    doomed = FencedLock(flaky, "l", timeout=30)
    node = redis_server.server_for("l").admin()  # DEBUG SLEEP on the node that serves "l"
    staller = threading.Thread(target=lambda: node.execute_command("DEBUG", "SLEEP", 0.6))
    outcome = []

    def wait() -> None:
        try:
            outcome.append(doomed.acquire(blocking_timeout=0.3))
        except redis.RedisError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    wait_until_blocked(redis_server, 1)
    staller.start()
    waiting.join(10)
    staller.join(10)
    assert isinstance(outcome[0], redis.TimeoutError)
    # The failed waiter renews nothing now: its registration (its longest block, 0.1 s here,
    # plus a 1 s grace) runs out, and the queue passes over it.
    time.sleep(1.5)
    holder.release()
    assert not redis_client.exists("l")  # not handed to the waiter that failed
    assert FencedLock(redis_client, "l", timeout=30).acquire(blocking=False)


def test_an_answer_key_answers_a_caller_while_another_holds_the_lock(redis_client):
    """With the lock held and an answer key present, the caller gets its reads back at once,
    without the lock, and is not left in the queue."""
    record = "{l}:record"
    redis_client.set(record, "recorded")
    holder = FencedLock(redis_client, "l", timeout=60)
    holder.acquire()
    waiter = FencedLock(redis_client, "l", timeout=60)
    reads = waiter.acquire_and_read(lambda pipe: pipe.get(record), blocking_timeout=2,
                                    answer_keys=[record])
    assert reads == ["recorded"] and not waiter.owned()
    assert redis_client.llen(lock_keys("l")[2]) == 0
    holder.release()
    assert not redis_client.exists("l")  # handed to nobody


def test_an_answer_key_that_goes_before_its_read_sends_the_caller_back_to_the_queue(
        redis_server, redis_client):
    """The acquire script sees the answer key and lets the caller leave the queue, but the
    reads behind it find nothing (the record expired in between): the caller must queue again
    and wait for the lock, not go on without it."""
    record = "{l}:record"
    redis_client.set(record, "recorded")
    holder = FencedLock(redis_client, "l", timeout=60)
    holder.acquire()
    checks = []

    def answered(reads: list) -> bool:
        checks.append(reads)
        redis_client.delete(record)  # as if its TTL ran out just after the script looked
        return reads[0] is not None and len(checks) > 1

    waiter = FencedLock(redis_client, "l", timeout=60, thread_local=False)
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire_and_read(
        lambda pipe: pipe.get(record), blocking_timeout=10, answer_keys=[record],
        answered=answered)))
    thread.start()
    wait_until_blocked(redis_server, 1)
    holder.release()
    thread.join(10)
    assert checks and got == [[None]]
    assert waiter.owned()


def test_a_failed_read_after_acquiring_releases_the_lock(redis_client):
    redis_client.set("a-string", "x")
    lock = FencedLock(redis_client, "l", timeout=30)
    with pytest.raises(redis.ResponseError):
        lock.acquire_and_read(lambda pipe: pipe.hgetall("a-string"))  # WRONGTYPE
    assert not redis_client.exists("l")


def hold_through(redis_client, renew: bool) -> FencedLock:
    # A 1 s lease renewed every third of it: a renewal may come up to 0.6 s late (a stalled
    # 2-core CI machine) and still keep it. A 0.3 s lease once lost this way in CI.
    lock = FencedLock(redis_client, "renewed", timeout=1.0, renew=renew)
    lock.acquire()
    time.sleep(3.2)  # more than three leases
    return lock


def test_renewal_keeps_a_live_holders_lock(redis_client):
    lock = hold_through(redis_client, renew=True)
    assert lock.owned()
    assert not FencedLock(redis_client, "renewed", timeout=5).acquire(blocking=False)
    lock.release()
    time.sleep(0.5)  # more than a renewal period
    assert not redis_client.exists("renewed")  # no renewal after the release


def test_renewal_of_a_short_lease_watched_behind_a_long_one(redis_client):
    """The watchdog sleeps until the next renewal still due, past holders that let go before
    theirs (as most orders do); a shorter lease watched later wakes it in time. (Without
    renewal the same short holder loses its lock: the test below.)"""
    long_holder = FencedLock(redis_client, "renewed-long", timeout=30, renew=True)
    long_holder.acquire()
    try:
        for _ in range(100):
            passing = FencedLock(redis_client, "passing", timeout=30, renew=True)
            passing.acquire()
            passing.release()
        lock = hold_through(redis_client, renew=True)
        assert lock.owned()
        lock.release()
    finally:
        long_holder.release()


def test_without_renewal_the_same_holder_loses_its_lock(redis_client):
    lock = hold_through(redis_client, renew=False)
    with pytest.raises(AssertionError):
        assert lock.owned()


def test_renewal_notices_a_lost_lock_and_leaves_the_new_holder_alone(redis_client, caplog):
    lock = FencedLock(redis_client, "renewed", timeout=0.3, renew=True)
    lock.acquire()
    redis_client.set("renewed", "thief", px=60_000)
    wait_for(lambda: "was lost before its holder finished" in caplog.text,
             "the watchdog finds the lock gone")
    time.sleep(0.3)  # three renewal periods: none may touch the thief's lock
    assert redis_client.pttl("renewed") > 30_000  # the thief's lease, not reset to 0.3 s
    lock.forget()
