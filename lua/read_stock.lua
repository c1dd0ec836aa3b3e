--#include holds
-- read_stock: a SKU's figures as GET /stock answers them. Reads only: the units of holds
-- that are due count as back in stock (the next order's script expires them).
--
-- KEYS[1]  stock counter    KEYS[2] reserved counter    KEYS[3] sold counter
-- KEYS[4]  holds    KEYS[5] per-customer limit
-- ARGV[1]  prefix of the SKU's order hashes
--
-- Returns {stock, reserved, sold, limit ('' = none)}.
local due = due_units({holds = KEYS[4], order_prefix = ARGV[1]}, now_ms())
return {count(KEYS[1]) + due, count(KEYS[2]) - due, count(KEYS[3]),
        redis.call('GET', KEYS[5]) or ''}
