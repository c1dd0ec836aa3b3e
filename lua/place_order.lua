--#include records
--#include holds
-- place_order: the whole `lua` strategy in one atomic step.
-- Checks the idempotency record, expires the SKU's due holds, checks the per-customer limit
-- and stock >= quantity, takes the units (sold, or reserved with a hold) and records the
-- order. Anything that moves the stock also advances the SKU's fencing counter: a `lock`
-- holder that read the stock before this order must not write its stale value over it
-- (commit_order refuses it).
--
-- KEYS[1]  stock counter of the SKU    KEYS[2] sold counter (units of confirmed orders)
-- KEYS[3]  hash of the new order (written only when the order is created)
-- KEYS[4]  fencing counter of the SKU's lock
-- KEYS[5]  reserved counter    KEYS[6] holds    KEYS[7] units per customer (see holds.lua)
-- KEYS[8]  per-customer limit (absent = none)
-- KEYS[9]  optional: idempotency record of this request (a hash); absent = no Idempotency-Key.
--          The key's only record, under the SKU's tag: a key is scoped to its SKU
-- ARGV[1]  quantity (integer >= 1)
-- ARGV[2]  order id    ARGV[3] sku    ARGV[4] strategy    ARGV[5] replica    ARGV[6] created_at
-- ARGV[7]  request fingerprint (the same key with another fingerprint = key reused)
-- ARGV[8]  idempotency record lifetime in seconds
-- ARGV[9]  customer id ('' = none)    ARGV[10] hold in seconds (0 = confirmed at once)
-- ARGV[11] prefix of the SKU's order hashes (prefix .. order id)
-- Both records' layouts (the order hash, the idempotency record) are in records.lua.
--
-- Returns {code, replayed, order_id, stock_left, strategy, replica, status, expires_ms,
--          expired}
--   code      1 created; 0 out of stock; 2 over the customer's limit (for 0 and 2 only the
--             idempotency record is written); -1 the key was used for another request on
--             this SKU; -2 the SKU has a limit and the order no customer id (for -1 and -2
--             nothing is written). Due holds are expired whatever the code (but -1).
--   replayed  1 when this is the answer recorded for an earlier request with the same key
--   status    of the order created: 'confirmed' or 'reserved' (until expires_ms, Redis ms)
--   expired   holds this call expired (their units are back in stock)
local idem = KEYS[9]
if idem then
  local rec = read_idempotency(idem)
  if rec then
    if rec.fp ~= ARGV[7] then
      return {-1, 0, '', 0, '', '', '', '', 0}
    end
    return {rec.code, 1, rec.order_id, rec.stock_left, rec.strategy, rec.replica,
            rec.status or '', rec.expires_ms or '', 0}
  end
end

local sku = {stock = KEYS[1], sold = KEYS[2], reserved = KEYS[5], holds = KEYS[6],
             customers = KEYS[7], order_prefix = ARGV[11]}
local now = now_ms()
local expired = expire_due(sku, now)
if expired > 0 then
  redis.call('INCR', KEYS[4])
end
local quantity, customer, hold_s = tonumber(ARGV[1]), ARGV[9], tonumber(ARGV[10])
local limit = tonumber(redis.call('GET', KEYS[8]) or '')
if limit and customer == '' then
  return {-2, 0, '', 0, '', '', '', '', expired}
end
local stock = count(KEYS[1])
local code, order_id, status, expires = 0, '', '', ''
if limit and tonumber(redis.call('HGET', KEYS[7], customer) or '0') + quantity > limit then
  code = 2
elseif stock >= quantity then
  stock = redis.call('DECRBY', KEYS[1], quantity)
  status, expires = book_units(sku, ARGV[2], quantity, customer, hold_s, now)
  redis.call('INCR', KEYS[4])
  write_order(KEYS[3], ARGV[2], ARGV[3], quantity, ARGV[4], ARGV[5], ARGV[6], customer,
              status, expires)
  code, order_id = 1, ARGV[2]
end
if idem then
  write_idempotency(idem, ARGV[7], code, order_id, stock, ARGV[4], ARGV[5], status, expires,
                    ARGV[8])
end
return {code, 0, order_id, stock, ARGV[4], ARGV[5], status, expires, expired}
