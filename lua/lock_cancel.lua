--#include lock_handoff
-- lock_cancel: a waiter gives up. It leaves the queue; if the lock reached it in the meantime,
-- it is passed on at once.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua
--
-- Returns 1 if the lock had reached the caller (and was passed on), else 0.
local token, prefix = ARGV[1], ARGV[3]
redis.call('LREM', KEYS[3], 0, token)
redis.call('HDEL', KEYS[4], token)
redis.call('DEL', prefix .. token)
return release_if_held(token, prefix)
