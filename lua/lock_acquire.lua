--#include lock_handoff
-- lock_acquire: take the lock if it is free, or join (or stay in) the queue of waiters.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua (lock, fencing counter, queue, deadlines;
-- token, lease ms, grant list prefix)
-- ARGV[4]  registration in ms: how long the caller will wait before it calls again (it is
--          dropped from the queue if it does not); -1 = do not queue (a non-blocking acquire)
--
-- Returns {1, fencing_token} when the caller holds the lock (taken now, or handed to it while
-- it was not blocked on its grant list); {0, pttl} when another holds it (PTTL: -1 = no
-- expiry). A second acquire with the token of the current holder is refused, as SET NX would.
local token, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  local fence = redis.call('LPOP', prefix .. token)
  if fence then
    return {1, tonumber(fence)}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
if not holder then
  -- Free. With waiters queued it means a lease ran out and nobody released: serve the queue.
  local first, first_lease = next_waiter()
  if not first or first == token then
    redis.call('DEL', prefix .. token)
    return {1, take(token, lease)}
  end
  grant(first, first_lease, prefix)
end
local register = tonumber(ARGV[4])
if register > 0 then
  if redis.call('HEXISTS', KEYS[4], token) == 0 then
    redis.call('DEL', prefix .. token)  -- no stale grant from an earlier turn
    redis.call('RPUSH', KEYS[3], token)
  end
  redis.call('HSET', KEYS[4], token, (now_ms() + register) .. ':' .. lease)
  -- The queue outlives every registration in it, and no more: abandoned queues go away.
  local keep = math.max(register + 1000, redis.call('PTTL', KEYS[3]))
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
end
return {0, redis.call('PTTL', KEYS[1])}
