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

-- A grant nobody collects (its waiter died just now) goes away after this long at most.
local GRANT_TTL_MS = 10000

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
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

-- Remove and return the longest-waiting token that still waits, and its lease; nil if none.
local function next_waiter()
  local now = now_ms()
  while true do
    local token = redis.call('LPOP', KEYS[3])
    if not token then
      return nil, 0
    end
    local entry = redis.call('HGET', KEYS[4], token)
    redis.call('HDEL', KEYS[4], token)
    local deadline, lease = string.match(entry or '', '^(%d+):(%d+)$')
    if deadline and tonumber(deadline) > now then
      return token, tonumber(lease)
    end
  end
end

-- Make a waiter the holder and wake it with its fencing token.
local function grant(token, lease, prefix)
  local fence = take(token, lease)
  local list = prefix .. token
  redis.call('DEL', list)
  redis.call('RPUSH', list, fence)
  redis.call('PEXPIRE', list, lease > 0 and lease or GRANT_TTL_MS)
end

-- The holder is done: the next waiter gets the lock, or it is free.
local function pass_on(prefix)
  local token, lease = next_waiter()
  if token then
    grant(token, lease, prefix)
  else
    redis.call('DEL', KEYS[1])
  end
end

-- If `token` holds the lock, pass it on: 1; else change nothing: 0.
local function release_if_held(token, prefix)
  if redis.call('GET', KEYS[1]) ~= token then
    return 0
  end
  pass_on(prefix)
  return 1
end
