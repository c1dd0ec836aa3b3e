--#include clock
-- holds: reservations and their expiry, for the scripts that change or read a SKU's stock
-- (included, not run alone).
--
-- An order placed with a hold takes its units out of stock at once and counts them in the
-- SKU's `reserved` counter; its id waits in the SKU's holds, a sorted set scored by its
-- deadline (Redis time, ms). Nothing has to run at the deadline: every script that decides
-- from the stock first expires the holds that are due (expire_due), and a read counts their
-- units as back in stock (due_units). An expired hold's units are on sale again the moment it
-- expires, for whoever comes next.
--
-- `sku` below is a table of the SKU's key names: stock, reserved, holds, customers (units per
-- customer id: reserved + confirmed), and order_prefix (order_prefix .. order id = the order's
-- hash). All carry the SKU's hash tag, so the order hashes a script reaches from the holds are
-- in its cluster slot.

-- The integer at `key` (0 when it does not exist).
local function count(key)
  return tonumber(redis.call('GET', key) or '0')
end

-- Take `quantity` units off `customer`'s count (an empty id is no customer).
local function release_customer(customers, customer, quantity)
  if customer and customer ~= '' then
    if redis.call('HINCRBY', customers, customer, -quantity) <= 0 then
      redis.call('HDEL', customers, customer)
    end
  end
end

-- Expire every hold due by `until_ms`: each order becomes `expired`, its units go back to
-- stock and off its customer's count. Returns how many holds expired. Every order is read
-- before the first write: while the slot migrates, Redis refuses an order hash that is not
-- here yet, and the refusal then comes before anything is written.
local function expire_due(sku, until_ms)
  local due = redis.call('ZRANGEBYSCORE', sku.holds, '-inf', until_ms)
  if #due == 0 then
    return 0
  end
  local orders = {}
  for i, order_id in ipairs(due) do
    local order = sku.order_prefix .. order_id
    local fields = redis.call('HMGET', order, 'quantity', 'customer_id')
    orders[i] = {key = order, quantity = tonumber(fields[1]), customer = fields[2]}
  end
  local units = 0
  for _, order in ipairs(orders) do
    redis.call('HSET', order.key, 'status', 'expired')
    release_customer(sku.customers, order.customer, order.quantity)
    units = units + order.quantity
  end
  redis.call('ZREMRANGEBYSCORE', sku.holds, '-inf', until_ms)
  redis.call('INCRBY', sku.stock, units)
  redis.call('DECRBY', sku.reserved, units)
  return #due
end

-- The units of the holds due by `until_ms`, left as they are (a read).
local function due_units(sku, until_ms)
  local units = 0
  for _, order_id in ipairs(redis.call('ZRANGEBYSCORE', sku.holds, '-inf', until_ms)) do
    units = units + tonumber(redis.call('HGET', sku.order_prefix .. order_id, 'quantity'))
  end
  return units
end

-- Count `quantity` units, just taken from stock by order `order_id`, where they now belong:
-- sold, or reserved until `now` + `hold_s` seconds (hold_s 0: no hold); and on the
-- customer's count. Returns the order's status and deadline ('' without a hold).
local function book_units(sku, order_id, quantity, customer, hold_s, now)
  if customer ~= '' then
    redis.call('HINCRBY', sku.customers, customer, quantity)
  end
  if hold_s > 0 then
    local expires = now + hold_s * 1000
    redis.call('INCRBY', sku.reserved, quantity)
    redis.call('ZADD', sku.holds, expires, order_id)
    return 'reserved', expires
  end
  redis.call('INCRBY', sku.sold, quantity)
  return 'confirmed', ''
end

-- Settle the reserved order `order_id` (hash `order`): 'confirm' sells its units, 'cancel'
-- takes them off its customer's count. Either way they leave `reserved`; a cancel's caller
-- puts them back in stock. Returns the order's quantity.
local function settle(sku, order, order_id, action)
  local fields = redis.call('HMGET', order, 'quantity', 'customer_id')
  local quantity = tonumber(fields[1])
  redis.call('ZREM', sku.holds, order_id)
  redis.call('DECRBY', sku.reserved, quantity)
  if action == 'confirm' then
    redis.call('INCRBY', sku.sold, quantity)
    redis.call('HSET', order, 'status', 'confirmed')
  else
    release_customer(sku.customers, fields[2], quantity)
    redis.call('HSET', order, 'status', 'cancelled')
  end
  return quantity
end
