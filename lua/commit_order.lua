-- commit_order: the write half of the `lock` strategy (and of the unsafe `none` control).
-- The caller read the stock and decided; this writes that decision, but only while the caller's
-- fencing token is still the newest one issued for the SKU's lock. A holder whose lease ran out
-- (paused, slow) holds an older token, and its stale stock value is refused.
--
-- KEYS[1]  fencing counter of the SKU's lock (incremented by every acquisition and stock change)
-- KEYS[2]  stock counter    KEYS[3] sold counter    KEYS[4] hash of the new order
-- KEYS[5]  optional: idempotency record of this request (a hash)
-- ARGV[1]  fencing token; '' skips the check (only the unsafe control does that)
-- ARGV[2]  decision: 1 create the order, 0 out of stock
-- ARGV[3]  stock value decided by the caller: the new stock (1), or the stock it saw (0)
-- ARGV[4]  quantity   ARGV[5] order id   ARGV[6] sku   ARGV[7] strategy   ARGV[8] replica
-- ARGV[9]  created_at   ARGV[10] request fingerprint   ARGV[11] idempotency record lifetime (s)
--
-- Returns 1 written; 0 refused: the token is no longer the newest, nothing was written.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local code, order_id = tonumber(ARGV[2]), ''
if code == 1 then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('INCRBY', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[4], 'order_id', ARGV[5], 'sku', ARGV[6], 'quantity', ARGV[4],
    'strategy', ARGV[7], 'replica', ARGV[8], 'created_at', ARGV[9])
  order_id = ARGV[5]
end
if KEYS[5] then
  redis.call('HSET', KEYS[5], 'fp', ARGV[10], 'code', code, 'order_id', order_id,
    'stock_left', ARGV[3], 'strategy', ARGV[7], 'replica', ARGV[8])
  redis.call('EXPIRE', KEYS[5], ARGV[11])
end
return 1
