--#include lock_handoff
-- lock_acquire: take the lock if it is free, or join (or stay in) the queue of waiters.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua (lock, fencing counter, queue, deadlines;
-- token, lease ms, grant list prefix)
-- KEYS[5]  the caller's own grant list (ARGV[3] .. ARGV[1])
-- ARGV[4]  registration in ms: how long the caller will wait before it calls again (it is
--          dropped from the queue if it does not); -1 = do not queue (a non-blocking acquire)
-- ARGV[5]  (optional) ms for which the caller blocks on its grant list right behind this
--          script, in the same round trip; 0 or absent: it does not. With it:
--   KEYS[6]  the caller's marker list, which it filled just before this script; deleted as
--            this script's last step, so a BLPOP on both lists ends at once when this script
--            did not run to its end (NOSCRIPT, an error), instead of blocking for nothing.
--            (A Redis out of memory refuses the marker too: the BLPOP then waits its block.)
-- KEYS[6..], or KEYS[7..] with a marker: keys that answer the caller when any of them exists
--          (its request was recorded earlier): while another holds the lock, the caller then
--          leaves the queue (or does not join it)
--
-- Returns {1, fencing_token} when the caller holds the lock: taken now, handed to it while it
-- was not blocked on its grant list, or held by it already (an earlier answer was lost): the
-- lease is then renewed. {2, pttl} when another holds it and an answer key exists. {0, pttl}
-- when another holds it, or it is free but must go to the first waiter (PTTL: -1 = no expiry,
-- -2 = not held).
-- With ARGV[5], the caller's BLPOP also finds on its grant list, at once: the fencing token
-- when it holds the lock; 0 when an answer key exists; -1 when the holder's lease ends before
-- the block would (the caller then waits for that instead); else the BLPOP waits for a grant.
local token, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local block = tonumber(ARGV[5] or '0')
local first_answer_key = block > 0 and 7 or 6

-- Put `value` on the caller's grant list, for its BLPOP. Pushed before the trim, so the list
-- never stops existing (see lock_handoff.lua on slot migrations).
local function tell(value)
  redis.call('RPUSH', KEYS[5], value)
  redis.call('LTRIM', KEYS[5], -1, -1)
  redis.call('PEXPIRE', KEYS[5], GRANT_TTL_MS)
end

-- Every reply goes through here: the marker's DEL is the script's last step.
local function finish(reply)
  if block > 0 then
    redis.call('DEL', KEYS[6])
  end
  return reply
end

local function held(fence)
  if block > 0 then
    tell(fence)
  end
  return finish({1, fence})
end

local holder = redis.call('GET', KEYS[1])
if holder == token then
  -- The caller took the lock, or was handed it, and did not hear of it (a lost answer, or a
  -- grant it has not popped yet). Its fencing token is the counter's value now: the counter
  -- also moves when a `lua` order or a stock change overtakes the holder, and the caller's
  -- reads come after this answer, so they are as new as that value.
  if block == 0 then
    redis.call('DEL', KEYS[5])
  end
  if lease > 0 then
    redis.call('PEXPIRE', KEYS[1], lease)
  else
    redis.call('PERSIST', KEYS[1])
  end
  return held(tonumber(redis.call('GET', KEYS[2]) or '0'))
end
if not holder then
  -- Free. With waiters queued it means a lease ran out and nobody released: serve the queue.
  -- (A free lock's key does not exist, so during a slot migration Redis never runs this.)
  local plan = plan_release(prefix)
  if not plan.token or plan.token == token then
    local drop = plan.gone
    drop[#drop + 1] = plan.token
    dequeue(drop)
    if block == 0 then
      redis.call('DEL', KEYS[5])
    end
    return held(take(token, lease))
  end
  if plan.reachable then
    pass_on(plan, prefix)
  end
end
if #KEYS >= first_answer_key and redis.call('EXISTS', unpack(KEYS, first_answer_key)) > 0 then
  redis.call('LREM', KEYS[3], 0, token)
  redis.call('HDEL', KEYS[4], token)
  if block > 0 then
    tell(0)
  end
  return finish({2, redis.call('PTTL', KEYS[1])})
end
local pttl = redis.call('PTTL', KEYS[1])
local retry = block > 0 and pttl >= 0 and pttl < block
local register = tonumber(ARGV[4])
if register > 0 then
  if redis.call('HEXISTS', KEYS[4], token) == 0 then
    if not retry then  -- no stale grant from an earlier turn (the -1 below replaces one)
      redis.call('DEL', KEYS[5])
    end
    redis.call('RPUSH', KEYS[3], token)
  end
  redis.call('HSET', KEYS[4], token, (now_ms() + register) .. ':' .. lease)
  -- The queue outlives every registration in it, and no more: abandoned queues go away.
  local keep = math.max(register + 1000, redis.call('PTTL', KEYS[3]))
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
end
if retry then
  tell(-1)
end
return finish({0, pttl})
