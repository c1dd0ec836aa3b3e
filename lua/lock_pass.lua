--#include lock_handoff
-- lock_pass: the holder hands the lock straight to a waiter of its own process, which waited
-- in the process and not in the queue here (see service/cohort.py). The waiter gets its own
-- fencing token, as a hand-off through the queue gives one.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua, except ARGV[2]: the waiter's lease in ms
-- ARGV[4]  the waiter's token
--
-- Returns {fencing token, length of the queue here} when handed over; {0, 0} when ARGV[1]
-- does not hold the lock (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, 0}
end
local queued = redis.call('LLEN', KEYS[3])
return {take(ARGV[4], tonumber(ARGV[2])), queued}
