--#include lock_handoff
-- lock_release: release the lock if this token holds it, handing it to the longest waiter.
--
-- KEYS[1..4] and ARGV[1..3] as in lock_handoff.lua
--
-- Returns 1 released; 0 the token does not hold the lock (nothing changed).
return release_if_held(ARGV[1], ARGV[3])
