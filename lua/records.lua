-- records: the two records the order scripts keep, each layout spelled here only. Included by
-- the order scripts (not run alone); service/records.py reads both back (OrderRecord,
-- IdempotencyRecord), with the same field names.

-- Write the hash of an order at `key`. `status`: confirmed, or reserved until `expires_ms`
-- (Redis time in ms; '' without a hold); the settle scripts and expire_due change it later.
local function write_order(key, order_id, sku, quantity, strategy, replica, created_at,
                           customer_id, status, expires_ms)
  redis.call('HSET', key, 'order_id', order_id, 'sku', sku, 'quantity', quantity,
    'strategy', strategy, 'replica', replica, 'created_at', created_at,
    'customer_id', customer_id, 'status', status, 'expires_ms', expires_ms)
end

-- Write the idempotency record at `key`, kept for `ttl_s` seconds: what a retry with the same
-- Idempotency-Key is answered from. `fp` is the request's fingerprint; the rest, the outcome
-- it got (`code` as place_order returns it; `status` and `expires_ms` of the order created).
local function write_idempotency(key, fp, code, order_id, stock_left, strategy, replica,
                                 status, expires_ms, ttl_s)
  redis.call('HSET', key, 'fp', fp, 'code', code, 'order_id', order_id,
    'stock_left', stock_left, 'strategy', strategy, 'replica', replica,
    'status', status, 'expires_ms', expires_ms)
  redis.call('EXPIRE', key, ttl_s)
end

-- The idempotency record at `key` as a table by field name (`code` and `stock_left` numbers),
-- or nil if there is none. HGETALL, so that the field names stay in write_idempotency only.
local function read_idempotency(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil
  end
  local record = {}
  for i = 1, #flat, 2 do
    record[flat[i]] = flat[i + 1]
  end
  record.code, record.stock_left = tonumber(record.code), tonumber(record.stock_left)
  return record
end
