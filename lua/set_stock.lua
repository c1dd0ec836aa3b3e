-- set_stock: set the available stock of a SKU, keeping the books balanced.
-- `supplied` counts all stock ever made available, so stock + sold == supplied holds
-- for every strategy that never oversells. Bumping the fencing counter makes any lock holder
-- that read the old stock lose its write (commit_order refuses it) instead of overwriting this.
--
-- KEYS[1]  stock counter    KEYS[2] supplied counter    KEYS[3] fencing counter of the SKU's lock
-- ARGV[1]  new stock (integer >= 0)
--
-- Returns the new stock.
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = tonumber(ARGV[1])
redis.call('SET', KEYS[1], new)
redis.call('INCRBY', KEYS[2], new - old)
redis.call('INCR', KEYS[3])
return new
