--#include lock_handoff
-- lock_acquire: take the lock if it is free, or join the queue of waiters.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua (lock, fencing counter, queue, deadlines;
-- token, lease ms, grant list prefix)
-- ARGV[4]  how long the caller will wait, in ms: -1 = not at all (never queued), 0 = no limit
--
-- Returns {1, fencing_token} when the caller holds the lock (taken now, or handed to it
-- earlier); {0, pttl} when another holds it (pttl as PTTL: -1 = no expiry).
local token, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  -- handed over while the caller was not blocked on its grant list
  local fence = redis.call('LPOP', prefix .. token)
  return {1, tonumber(fence or redis.call('GET', KEYS[2]))}
end
if not holder then
  -- Free. With waiters queued it means a lease ran out and nobody released: serve the queue.
  local first = next_waiter()
  if not first or first == token then
    return {1, take(token, lease)}
  end
  grant(first, lease, prefix)
end
local wait = tonumber(ARGV[4])
if wait >= 0 and redis.call('HEXISTS', KEYS[4], token) == 0 then
  redis.call('RPUSH', KEYS[3], token)
  redis.call('HSET', KEYS[4], token, wait > 0 and now_ms() + wait or 0)
end
return {0, redis.call('PTTL', KEYS[1])}
