--#include lock_handoff
-- lock_cancel: a waiter gives up. It leaves the queue; if the lock reached it in the meantime,
-- it is passed on at once.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua
-- KEYS[5]  the caller's own grant list (ARGV[3] .. ARGV[1])
--
-- Returns 1 if the lock had reached the caller (and was passed on), else 0.
local token, prefix = ARGV[1], ARGV[3]
local plan = plan_release_if_held(token, prefix)
if plan then
  -- A holder is no longer queued (the hand-off took it off): the queue is only read, by the
  -- plan, before it is written.
  redis.call('DEL', KEYS[5])
  return release_as_planned(plan, prefix)
end
redis.call('LREM', KEYS[3], 0, token)
redis.call('HDEL', KEYS[4], token)
redis.call('DEL', KEYS[5])
return 0
