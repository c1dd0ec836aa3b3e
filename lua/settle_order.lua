--#include holds
-- settle_order: confirm or cancel a reserved order in one atomic step (the `lua` strategy).
-- Expires the SKU's due holds first, so an order past its deadline is `expired` by then and
-- can no longer be confirmed or cancelled.
--
-- KEYS[1]  hash of the order    KEYS[2] stock counter    KEYS[3] sold counter
-- KEYS[4]  reserved counter    KEYS[5] holds    KEYS[6] units per customer
-- KEYS[7]  fencing counter of the SKU's lock
-- ARGV[1]  'confirm' or 'cancel'    ARGV[2] the order's id
-- ARGV[3]  prefix of the SKU's order hashes
--
-- Returns {code, expired, fields}
--   code     1 settled now; 0 it already was (confirmed, or cancelled: nothing changes);
--            2 it cannot be (an expired or cancelled order confirmed, a confirmed or expired
--            one cancelled: nothing changes); -1 no such order
--   expired  holds this call expired    fields  the order's hash as it is now (HGETALL)
local sku = {stock = KEYS[2], sold = KEYS[3], reserved = KEYS[4], holds = KEYS[5],
             customers = KEYS[6], order_prefix = ARGV[3]}
local expired = expire_due(sku, now_ms())
local moved = expired > 0
local status = redis.call('HGET', KEYS[1], 'status')
local code = 2
if not status then
  code = -1
elseif status == (ARGV[1] == 'confirm' and 'confirmed' or 'cancelled') then
  code = 0
elseif status == 'reserved' then
  local quantity = settle(sku, KEYS[1], ARGV[2], ARGV[1])
  if ARGV[1] == 'cancel' then
    redis.call('INCRBY', KEYS[2], quantity)
  end
  code, moved = 1, true
end
if moved then  -- the stock or the order changed under any lock holder's read: its write of
  redis.call('INCR', KEYS[7])  -- what it read is refused (see commit_settle, place_order)
end
return {code, expired, redis.call('HGETALL', KEYS[1])}
