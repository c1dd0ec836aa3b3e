-- lock_release: release the lock if this token holds it, and wake one waiter.
-- Waiters block on the signal list (BLPOP); Redis serves blocked clients first come, first
-- served, so each release hands the next turn to the longest waiter. At most one signal is
-- kept, and it expires, so a release nobody waited for leaves nothing behind for long.
--
-- KEYS[1]  the lock    KEYS[2] the lock's signal list
-- ARGV[1]  token       ARGV[2] signal lifetime in milliseconds
--
-- Returns 1 released; 0 the token does not hold the lock (nothing changed).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('RPUSH', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
