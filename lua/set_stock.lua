--#include holds
-- set_stock: set the available stock of a SKU and its per-customer limit, keeping the books
-- balanced. `supplied` counts all stock ever made available, so stock + reserved + sold ==
-- supplied holds for every strategy that never oversells. Due holds are expired first, so
-- the stock set is what is for sale from now on. Bumping the fencing counter makes any lock
-- holder that read the old stock lose its write (commit_order refuses it) instead of
-- overwriting this.
--
-- KEYS[1]  stock counter    KEYS[2] supplied counter    KEYS[3] fencing counter of the lock
-- KEYS[4]  reserved counter    KEYS[5] holds    KEYS[6] units per customer
-- KEYS[7]  per-customer limit    KEYS[8] sold counter
-- ARGV[1]  new stock (integer >= 0), or '' to leave it
-- ARGV[2]  new limit: an integer >= 1, '0' to remove it, '' to leave it
-- ARGV[3]  prefix of the SKU's order hashes
--
-- Returns {stock, reserved, sold, limit ('' = none)} after the change, and the number of holds
-- it expired.
local sku = {stock = KEYS[1], reserved = KEYS[4], holds = KEYS[5], customers = KEYS[6],
             order_prefix = ARGV[3]}
local expired = expire_due(sku, now_ms())
if ARGV[1] ~= '' then
  local old, new = count(KEYS[1]), tonumber(ARGV[1])
  redis.call('SET', KEYS[1], new)
  redis.call('INCRBY', KEYS[2], new - old)
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[7])
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[7], ARGV[2])
end
redis.call('INCR', KEYS[3])
return {count(KEYS[1]), count(KEYS[4]), count(KEYS[8]),
        redis.call('GET', KEYS[7]) or '', expired}
