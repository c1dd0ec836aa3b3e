-- lock_acquire: take the lock if it is free and hand out the next fencing token, atomically.
--
-- KEYS[1]  the lock (its value is the holder's token, as in redis-py's Lock)
-- KEYS[2]  the lock's fencing counter
-- ARGV[1]  token    ARGV[2] lease in milliseconds (0 = no expiry)
--
-- Returns {1, fencing_token} when acquired; {0, pttl} when held (pttl as PTTL: -1 = no expiry).
local lease = tonumber(ARGV[2])
local ok
if lease > 0 then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', lease)
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if ok then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
