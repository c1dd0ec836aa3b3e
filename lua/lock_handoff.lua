--#include clock
-- lock_handoff: helpers of the lock scripts, included by them (not run alone).
-- The lock is handed over in arrival order: a waiter appends its token to the queue, registers
-- "<deadline>:<lease>" in the deadlines hash (deadline: Redis time in ms until which it is
-- known to wait; it renews it on every wake-up, so a waiter that died drops out within
-- seconds), and blocks on its own grant list. The holder's release gives the lock straight to
-- the longest waiter that still waits, with that waiter's own lease, and pushes its fencing
-- token to its grant list.
--
-- Every including script takes KEYS[1] the lock, KEYS[2] its fencing counter, KEYS[3] the
-- queue (a list), KEYS[4] the deadlines (a hash), and ARGV[1] the caller's token, ARGV[2] the
-- caller's lease in ms (0 = no expiry), ARGV[3] the prefix of grant lists (prefix .. token; it
-- carries the lock's hash tag, so every key stays in the lock's cluster slot).
--
-- A slot migration: while the lock's slot is MIGRATING, Redis Cluster runs a script here only
-- if every key in its KEYS exists, and refuses, mid-script, any key that does not exist here
-- (one the script deleted, or an undeclared grant list); a script is not rolled back. So these
-- helpers read before they write, touch no key after deleting it, and check a waiter's grant
-- list (which only the script learns) before the first write that hands it the lock.

-- A grant nobody collects (its waiter died just now) goes away after this long at most.
local GRANT_TTL_MS = 10000

-- Whether this script may write `key` here: false while the slot migrates and `key` is not
-- here (then Redis refuses it; pcall turns the refusal into a value).
local function writable(key)
  return type(redis.pcall('EXISTS', key)) == 'number'
end

-- Make `token` the holder and return its fencing token.
local function take(token, lease)
  if lease > 0 then
    redis.call('SET', KEYS[1], token, 'PX', lease)
  else
    redis.call('SET', KEYS[1], token)
  end
  return redis.call('INCR', KEYS[2])
end

-- The longest-waiting token that still waits and its lease (nil, 0 if none), and the tokens
-- queued ahead of it (waiters that gave up). Reads only.
local function first_waiter()
  local now = now_ms()
  local gone = {}
  while true do
    local token = redis.call('LINDEX', KEYS[3], #gone)
    if not token then
      return nil, 0, gone
    end
    local deadline, lease = string.match(redis.call('HGET', KEYS[4], token) or '',
                                         '^(%d+):(%d+)$')
    if deadline and tonumber(deadline) > now then
      return token, tonumber(lease), gone
    end
    gone[#gone + 1] = token
  end
end

-- Take `tokens`, the first entries of the queue, off it and out of the deadlines, in one
-- command each (the second of two HDELs could meet a hash the first one emptied, and deleted).
local function dequeue(tokens)
  if #tokens > 0 then
    redis.call('LTRIM', KEYS[3], #tokens, -1)
    redis.call('HDEL', KEYS[4], unpack(tokens))
  end
end

-- Make a waiter the holder and wake it with its fencing token. A stale grant of an earlier
-- turn is trimmed off after the push, not deleted before it: the list never stops existing.
local function grant(token, lease, prefix)
  local fence = take(token, lease)
  local list = prefix .. token
  redis.call('RPUSH', list, fence)
  redis.call('LTRIM', list, -1, -1)
  redis.call('PEXPIRE', list, lease > 0 and lease or GRANT_TTL_MS)
end

-- How the holder's release will go, decided before anything is written: {waiter, its lease,
-- the tokens to drop from the queue, whether its grant list can be written}.
local function plan_release(prefix)
  local token, lease, gone = first_waiter()
  return {token = token, lease = lease, gone = gone,
          reachable = not token or writable(prefix .. token)}
end

-- The holder is done: the next waiter gets the lock, or it is free. When the slot migrates
-- and the waiter's grant list cannot be written here, the lock is freed instead and the queue
-- left as it is: the waiter, still first, takes the lock when it calls again (it blocks no
-- longer than the lease it saw), and no one holds a lock that nobody was told about.
local function pass_on(plan, prefix)
  if not plan.reachable then
    redis.call('DEL', KEYS[1])
    return
  end
  local drop = plan.gone
  if plan.token then
    drop[#drop + 1] = plan.token
  end
  dequeue(drop)
  if plan.token then
    grant(plan.token, plan.lease, prefix)
  else
    redis.call('DEL', KEYS[1])
  end
end

-- If `token` holds the lock: how to pass it on (see plan_release); else nil.
local function plan_release_if_held(token, prefix)
  if redis.call('GET', KEYS[1]) ~= token then
    return nil
  end
  return plan_release(prefix)
end

-- Carry out plan_release_if_held's plan: 1 released, 0 the caller did not hold the lock.
local function release_as_planned(plan, prefix)
  if not plan then
    return 0
  end
  pass_on(plan, prefix)
  return 1
end

-- If `token` holds the lock, pass it on: 1; else change nothing: 0.
local function release_if_held(token, prefix)
  return release_as_planned(plan_release_if_held(token, prefix), prefix)
end
