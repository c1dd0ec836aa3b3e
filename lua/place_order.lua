--#include records
-- place_order: the whole `lua` strategy in one atomic step.
-- Checks the idempotency record, checks stock >= quantity, decrements, records the order.
-- A decrement also advances the SKU's fencing counter: a `lock` holder that read the stock
-- before this order must not write its stale value over it (commit_order refuses it).
--
-- KEYS[1]  stock counter of the SKU
-- KEYS[2]  sold counter of the SKU (total quantity of recorded orders)
-- KEYS[3]  hash of the new order (written only when the order is created)
-- KEYS[4]  fencing counter of the SKU's lock
-- KEYS[5]  optional: idempotency record of this request (a hash); absent = no Idempotency-Key.
--          The key's only record, under the SKU's tag: a key is scoped to its SKU
-- ARGV[1]  quantity (integer >= 1)
-- ARGV[2]  order id    ARGV[3] sku    ARGV[4] strategy    ARGV[5] replica    ARGV[6] created_at
-- ARGV[7]  request fingerprint (the same key with another fingerprint = key reused)
-- ARGV[8]  idempotency record lifetime in seconds
-- Both records' layouts (the order hash, the idempotency record) are in records.lua.
--
-- Returns {code, replayed, order_id, stock_left, strategy, replica}
--   code      1 created; 0 out of stock (only the idempotency record is written);
--             -1 the key was used for another request on this SKU (nothing written)
--   replayed  1 when this is the answer recorded for an earlier request with the same key
local idem = KEYS[5]
if idem then
  local rec = read_idempotency(idem)
  if rec then
    if rec.fp ~= ARGV[7] then
      return {-1, 0, '', 0, '', ''}
    end
    return {rec.code, 1, rec.order_id, rec.stock_left, rec.strategy, rec.replica}
  end
end

local quantity = tonumber(ARGV[1])
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local code, order_id = 0, ''
if stock >= quantity then
  stock = redis.call('DECRBY', KEYS[1], quantity)
  redis.call('INCRBY', KEYS[2], quantity)
  redis.call('INCR', KEYS[4])
  write_order(KEYS[3], ARGV[2], ARGV[3], quantity, ARGV[4], ARGV[5], ARGV[6])
  code, order_id = 1, ARGV[2]
end
if idem then
  write_idempotency(idem, ARGV[7], code, order_id, stock, ARGV[4], ARGV[5], ARGV[8])
end
return {code, 0, order_id, stock, ARGV[4], ARGV[5]}
