"""The faults: what is done to the running processes, and what was seen of it.

Each ``inject`` runs while the customers order (see ``faults.run_variant``) and returns when
the fault is over; each ``describe`` reports the fault's own figures from the timeline.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

from .customers import Attempt, Customer
from .faults import (
    Scenario,
    Size,
    Stage,
    Variant,
    answers_between,
    first_created_after,
    latency_summary,
    ms,
)
from .redis_cluster import RedisClusterNodes

FREEZE_S = 1.0
REDIS_DOWN_S = 1.0
SLOW_LATENCY_S = 0.4  # each way; REDIS_TIMEOUT_MS is 300
SLOW_FOR_S = 1.0
DROP_PROBABILITY = 0.2
HOLD_MS = 400  # renewal: replica-1's critical section, against a 150 ms lease
NO_RENEWAL = {"LOCK_RENEWAL": "0"}


def _label(attempt: Attempt) -> str:
    problem = attempt.problem.rsplit("/", 1)[-1]
    return f"{attempt.status or 'no answer'}" + (f" {problem}" if problem else "")


def holder_answers(stage: Stage, customers: list[Customer], after: float = 0.0) -> str:
    """What replica-1 answered after ``after``, as 'status problem xN'."""
    counts = Counter(_label(a) for c in customers for a in c.attempts
                     if a.url.startswith(stage.holder_url) and a.answered_at > after)
    return ", ".join(f"{label} x{n}" for label, n in sorted(counts.items())) or "nothing"


def _hold_the_lock(stage: Stage) -> bool:
    """With the lock strategy, until replica-1 holds the lock; False for the others."""
    return stage.shoppers.plan.strategy == "lock" and stage.wait_for_holder()


# 1. A replica killed (SIGKILL) while it holds the lock.

def kill(stage: Stage) -> None:
    stage.at(1 / 3)
    holding = _hold_the_lock(stage)
    stage.cluster.replicas[0].signal(signal.SIGKILL)
    stage.marks["fault"] = time.perf_counter()
    stage.live_urls = stage.cluster.urls[1:]
    holding = holding and stage.holder_holds_lock()  # still: it died holding the lock
    stage.hit = holding or stage.shoppers.plan.strategy != "lock"
    if holding:
        deadline = time.monotonic() + 10
        while stage.holder_holds_lock() and time.monotonic() < deadline:
            time.sleep(0.001)
        stage.marks["lock free"] = time.perf_counter()


def describe_kill(stage: Stage, customers: list[Customer]) -> str:
    killed = stage.marks["fault"]
    how = "mid-load"
    if "lock free" in stage.marks:
        how = (f"holding the lock, which came free {ms(1000 * (stage.marks['lock free'] - killed))}"
               f" later (lease {stage.env['LOCK_TTL_MS']} ms)")
    return (f"{stage.holder} SIGKILLed {how}; next order created "
            f"{ms(first_created_after(customers, killed))} after the kill")


# 2. A replica frozen (SIGSTOP) past its lease while it holds the lock, then thawed.

def freeze(stage: Stage) -> None:
    stage.at(1 / 3)
    # Frozen between its read and its write: the write it makes on thawing is stale.
    read = stage.shoppers.plan.strategy == "lock" and stage.wait_for_holder_read()
    stage.cluster.replicas[0].signal(signal.SIGSTOP)
    stage.marks["fault"] = time.perf_counter()
    # Still holding once frozen: it had not written yet (its write passes the lock on).
    stage.marks["holding"] = float(read and stage.holder_holds_lock())
    stage.hit = bool(stage.marks["holding"]) or stage.shoppers.plan.strategy != "lock"
    try:
        time.sleep(FREEZE_S)
    finally:
        stage.cluster.replicas[0].signal(signal.SIGCONT)
        stage.marks["thaw"] = time.perf_counter()


def describe_freeze(stage: Stage, customers: list[Customer]) -> str:
    frozen, thawed = stage.marks["fault"], stage.marks["thaw"]
    others = sum(a.status == 201 for a in answers_between(customers, frozen, thawed))
    how = (f"between its read and its write (lease {stage.env['LOCK_TTL_MS']} ms)"
           if stage.marks["holding"] else "mid-load")
    after = holder_answers(stage, customers, thawed)
    return (f"{stage.holder} SIGSTOPped {FREEZE_S:g} s {how}; the others created {others} "
            f"orders meanwhile; after the thaw {stage.holder} answered {after}")


# 3. Redis killed (SIGKILL) and restarted on the same port and files.

def restart(stage: Stage) -> None:
    stage.at(1 / 3)
    stage.server.crash()
    stage.marks["fault"] = time.perf_counter()
    stage.hit = True
    try:
        time.sleep(REDIS_DOWN_S)
    finally:
        stage.server.start()
        stage.marks["up"] = time.perf_counter()


def describe_restart(stage: Stage, customers: list[Customer]) -> str:
    down, up = stage.marks["fault"], stage.marks["up"]
    while_down = [a for a in answers_between(customers, down, up) if a.sent_at >= down]
    refused = [a for a in while_down if a.status == 503]
    return (f"Redis SIGKILLed, back {up - down:.1f} s later: {len(refused)} of "
            f"{len(while_down)} orders sent while it was down answered 503 "
            f"({latency_summary(refused)}); first order created "
            f"{ms(first_created_after(customers, up))} after the restart")


# 4a. A flaky link: the proxy drops a fifth of Redis's answers for half the run.

def flaky(stage: Stage) -> None:
    stage.at(0.25)
    stage.proxy.drop_probability = DROP_PROBABILITY
    stage.marks["fault"] = time.perf_counter()
    try:
        stage.at(0.75)
    finally:
        stage.proxy.drop_probability = 0.0
        stage.marks["healed"] = time.perf_counter()
        stage.hit = stage.proxy.dropped > 0


def describe_flaky(stage: Stage, customers: list[Customer]) -> str:
    window = answers_between(customers, stage.marks["fault"], stage.marks["healed"])
    failed = sum(a.status != 201 and not a.final for a in window)
    return (f"for {stage.marks['healed'] - stage.marks['fault']:.1f} s the proxy cut the "
            f"connection instead of passing on {DROP_PROBABILITY:.0%} of Redis's replies "
            f"({stage.proxy.dropped} cut): {failed} of {len(window)} answers meanwhile were "
            "503 or none")


# 4b. A slow link: Redis 400 ms away each way for a second, beyond the 300 ms timeout.

def slow(stage: Stage) -> None:
    stage.at(1 / 3)
    normal = stage.proxy.latency_s
    stage.proxy.latency_s = SLOW_LATENCY_S
    stage.marks["fault"] = time.perf_counter()
    stage.hit = True
    try:
        time.sleep(SLOW_FOR_S)
    finally:
        stage.proxy.latency_s = normal
        stage.marks["healed"] = time.perf_counter()


def describe_slow(stage: Stage, customers: list[Customer]) -> str:
    window = answers_between(customers, stage.marks["fault"],
                             stage.marks["healed"] + 2 * SLOW_LATENCY_S)
    refused = [a for a in window if a.status == 503]
    return (f"Redis {SLOW_LATENCY_S * 1000:.0f} ms away each way for {SLOW_FOR_S:g} s (timeout "
            f"{stage.env['REDIS_TIMEOUT_MS']} ms): {len(refused)} answers 503 "
            f"({latency_summary(refused)})")


# 5. A critical section longer than the lease: renewal keeps it, or it fails cleanly.

def renewal(stage: Stage) -> None:
    """No fault to inject: replica-1's critical section outlives its lease by itself."""
    stage.hit = True


def describe_renewal(stage: Stage, customers: list[Customer]) -> str:
    return (f"{stage.holder} holds the lock {HOLD_MS} ms per order with a "
            f"{stage.env['LOCK_TTL_MS']} ms lease; it answered {holder_answers(stage, customers)}")


# 6. A Redis fail-over: the replication link stalls, the master dies with writes its replica
# never got, and the replica is promoted (by the Sentinels, or by the Redis Cluster).

STALL_S = 0.5


def failover(stage: Stage) -> None:
    stage.at(0.1)
    topology = stage.redis_setup
    cluster = isinstance(topology, RedisClusterNodes)
    if not (topology.as_started(stage.server) if cluster else topology.as_started()):
        return  # a fail-over came first (a starved machine): the link is not in the path
    if cluster:
        link = topology.link_of(stage.server)
        link.stall(replication_only=True)  # the clients share this proxy: they go on
    else:
        link = topology.link
        link.stall()
    stage.marks["stall"] = time.perf_counter()
    time.sleep(STALL_S)
    stage.server.crash()
    stage.marks["fault"] = time.perf_counter()
    if cluster:
        topology.wait_for_failover(stage.server)
        stage.marks["promoted"] = time.perf_counter()
        topology.rejoin(stage.server)
    else:
        topology.wait_for_failover()
        stage.marks["promoted"] = time.perf_counter()
        topology.rejoin_old_master()
    # As a restarted pod: back, empty, as the new master's replica (WAIT 1 can be met again).
    stage.marks["rejoined"] = time.perf_counter()
    # Whether orders were taken during the stall (what the fault is about) is known only
    # from the customers' answers: describe_failover sets ``hit``.


def describe_failover(stage: Stage, customers: list[Customer]) -> str:
    who = ("the cluster" if isinstance(stage.redis_setup, RedisClusterNodes)
           else "the Sentinels")
    if "stall" not in stage.marks:
        return (f"{who} had promoted the replica before the fault, which did not come: the "
                "replication link it stalls was no longer in the path")
    stalled, killed, promoted = (stage.marks[k] for k in ("stall", "fault", "promoted"))
    during = [a for a in answers_between(customers, stalled, killed) if a.sent_at >= stalled]
    told = sum(a.status == 201 for a in during)
    unknown = sum(a.problem.endswith("outcome-unknown") for a in during)
    stage.hit = told + unknown > 0  # orders met the stalled link: the fault bit
    rejoined = stage.marks["rejoined"]
    return (f"replication stalled {STALL_S:g} s, then the master SIGKILLed ({told} orders "
            f"answered 201 and {unknown} outcome-unknown during the stall); {who} promoted "
            f"the replica {promoted - killed:.1f} s later, and the old master was back as its "
            f"replica {rejoined - promoted:.1f} s after that; next order created "
            f"{ms(first_created_after(customers, promoted))} after the promotion")


HOLD = {"CRITICAL_SECTION_DELAY_MS": "20"}  # replica-1 holds long enough to be caught holding
UNFENCED = {"DISABLE_FENCING": "1"}
# REDIS_TIMEOUT_MS is 300 in the fault runs: the WAIT may take at most half of it.
WAIT = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "150"}
FAILOVER_VARIANTS = (
    Variant("lua, WAIT 1", "lua", env=WAIT),
    Variant("lock, WAIT 1", "lock", env=WAIT),
    Variant("lua, no WAIT", "lua", "lost"),
    Variant("lock, no WAIT", "lock", "lost"),
)

SCENARIOS = {s.name: s for s in (
    Scenario("kill", kill, describe_kill, size=Size(180, 60),
             env={"LOCK_TTL_MS": "500", "LOCK_WAIT_MS": "3000"}, variants=(
                 Variant("lua", "lua", holder_env=HOLD),
                 Variant("lock", "lock", holder_env=HOLD),
                 Variant("none (no lock)", "none", "oversold", holder_env=HOLD))),
    Scenario("freeze", freeze, describe_freeze, size=Size(180, 60),
             env={"LOCK_TTL_MS": "300", "LOCK_WAIT_MS": "3000"}, variants=(
                 Variant("lua", "lua", holder_env=HOLD),
                 Variant("lock", "lock", holder_env=HOLD),
                 Variant("lock, no fencing", "lock", "oversold",
                         holder_env={**HOLD, **UNFENCED}))),
    Scenario("restart", restart, describe_restart, size=Size(180, 60),
             env={"LOCK_TTL_MS": "500"}, variants=(
                 Variant("lua", "lua"),
                 Variant("lock", "lock"),
                 Variant("lua, no fsynced AOF", "lua", "lost", durable=False))),
    Scenario("flaky", flaky, describe_flaky, size=Size(180, 60), proxy=True,
             env={"LOCK_TTL_MS": "500"}, variants=(
                 Variant("lua", "lua"),
                 Variant("lock", "lock"),
                 Variant("lua, retries without a key", "lua", "phantom", with_key=False))),
    Scenario("slow", slow, describe_slow, size=Size(180, 60), proxy=True,
             env={"LOCK_TTL_MS": "500"}, variants=(
                 Variant("lua", "lua"),
                 Variant("lock", "lock"),
                 Variant("lua, retries without a key", "lua", "phantom", with_key=False))),
    Scenario("renewal", renewal, describe_renewal, size=Size(20, 5),
             env={"LOCK_TTL_MS": "150", "LOCK_WAIT_MS": "5000"}, variants=(
                 Variant("lock, renewal", "lock",
                         holder_env={"CRITICAL_SECTION_DELAY_MS": str(HOLD_MS)}),
                 Variant("lock, no renewal", "lock", env=NO_RENEWAL,
                         holder_env={"CRITICAL_SECTION_DELAY_MS": str(HOLD_MS)}),
                 Variant("lock, no renewal, no fencing", "lock", "oversold", env=NO_RENEWAL,
                         holder_env={"CRITICAL_SECTION_DELAY_MS": str(HOLD_MS), **UNFENCED}))),
    # Customers keep arriving for a while after the promotion (about 3-4 s after the kill).
    Scenario("failover-sentinel", failover, describe_failover, size=Size(600, 40),
             redis="sentinel", env={"LOCK_TTL_MS": "500"}, variants=FAILOVER_VARIANTS),
    Scenario("failover-cluster", failover, describe_failover, size=Size(600, 40),
             redis="cluster", env={"LOCK_TTL_MS": "500"}, variants=FAILOVER_VARIANTS),
)}
