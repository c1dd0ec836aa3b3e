--#include holds
-- expire_holds: expire a SKU's due holds (see holds.lua) before the `lock` strategy (or the
-- unsafe `none` control) reads the stock to decide from it. Sent on the acquire's pipeline,
-- right behind it: it runs as the caller's first step inside the lock.
--
-- KEYS[1]  the SKU's lock    KEYS[2] its fencing counter
-- KEYS[3]  stock counter    KEYS[4] reserved counter    KEYS[5] holds
-- KEYS[6]  units per customer
-- ARGV[1]  the caller's lock token; '' = no lock (the unsafe control)
-- ARGV[2]  prefix of the SKU's order hashes
--
-- A caller that holds the lock expires the holds and reads the result itself, so the fencing
-- counter stays as it is (its own token stays the newest). A caller that does not (it was
-- queued behind the holder: its reads are not used) changes nothing, so the holder's stock is
-- not moved under it. Without a lock, the holds are expired and the counter advanced, as a
-- `lua` order does: a lock holder that read the stock before cannot write over it.
--
-- Returns {now_ms, expired}: Redis time, and the number of holds this call expired.
local now = now_ms()
local holder = ARGV[1]
if holder ~= '' and redis.call('GET', KEYS[1]) ~= holder then
  return {now, 0}
end
local sku = {stock = KEYS[3], reserved = KEYS[4], holds = KEYS[5], customers = KEYS[6],
             order_prefix = ARGV[2]}
local expired = expire_due(sku, now)
if expired > 0 and holder == '' then
  redis.call('INCR', KEYS[2])
end
return {now, expired}
