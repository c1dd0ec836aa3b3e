--#include lock_handoff
-- lock_acquire: take the lock if it is free, or join (or stay in) the queue of waiters.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua (lock, fencing counter, queue, deadlines;
-- token, lease ms, grant list prefix)
-- KEYS[5]  the caller's own grant list (ARGV[3] .. ARGV[1])
-- ARGV[4]  registration in ms: how long the caller will wait before it calls again (it is
--          dropped from the queue if it does not); -1 = do not queue (a non-blocking acquire)
--
-- Returns {1, fencing_token} when the caller holds the lock: taken now, handed to it while it
-- was not blocked on its grant list, or held by it already (an earlier answer was lost): the
-- lease is then renewed. {0, pttl} when another holds it, or it is free but must go to the
-- first waiter (PTTL: -1 = no expiry, -2 = not held).
local token, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  -- The caller took the lock, or was handed it, and did not hear of it (a lost answer, or a
  -- grant it has not popped yet). Its fencing token is the counter's value now: the counter
  -- also moves when a `lua` order or a stock change overtakes the holder, and the caller's
  -- reads come after this answer, so they are as new as that value.
  redis.call('DEL', KEYS[5])
  if lease > 0 then
    redis.call('PEXPIRE', KEYS[1], lease)
  else
    redis.call('PERSIST', KEYS[1])
  end
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if not holder then
  -- Free. With waiters queued it means a lease ran out and nobody released: serve the queue.
  -- (A free lock's key does not exist, so during a slot migration Redis never runs this.)
  local plan = plan_release(prefix)
  if not plan.token or plan.token == token then
    local drop = plan.gone
    drop[#drop + 1] = plan.token
    dequeue(drop)
    redis.call('DEL', KEYS[5])
    return {1, take(token, lease)}
  end
  if plan.reachable then
    pass_on(plan, prefix)
  end
end
local register = tonumber(ARGV[4])
if register > 0 then
  if redis.call('HEXISTS', KEYS[4], token) == 0 then
    redis.call('DEL', KEYS[5])  -- no stale grant from an earlier turn
    redis.call('RPUSH', KEYS[3], token)
  end
  redis.call('HSET', KEYS[4], token, (now_ms() + register) .. ':' .. lease)
  -- The queue outlives every registration in it, and no more: abandoned queues go away.
  local keep = math.max(register + 1000, redis.call('PTTL', KEYS[3]))
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
end
return {0, redis.call('PTTL', KEYS[1])}
