--#include lock_handoff
--#include records
--#include holds
-- commit_order: the write half of the `lock` strategy (and of the unsafe `none` control).
-- The caller read the stock (after expire_holds), decided, and this writes that decision, but
-- only while the caller's fencing token is still the newest one issued for the SKU's lock. A
-- holder whose lease ran out (paused, slow) holds an older token, and its stale stock value
-- is refused. Then, in the same step, the caller's lock is handed to the next waiter (or
-- freed), if the caller still holds it.
--
-- KEYS[1..4] the SKU's lock, its fencing counter, queue and deadlines (see lock_handoff.lua)
-- KEYS[5]  stock counter    KEYS[6] sold counter    KEYS[7] hash of the new order
-- KEYS[8]  reserved counter    KEYS[9] holds    KEYS[10] units per customer (see holds.lua)
-- KEYS[11] optional: idempotency record of this request (a hash)
-- ARGV[1]  the holder's lock token ('' = no lock to release)   ARGV[2] lease in ms
-- ARGV[3]  grant list prefix (see lock_handoff.lua)
-- ARGV[4]  fencing token; '' skips the check (only the unsafe control does that)
-- ARGV[5]  decision: 1 create the order, 0 out of stock, 2 over the customer's limit
-- ARGV[6]  stock value decided by the caller: the new stock (1), or the stock it saw (0, 2)
-- ARGV[7]  quantity   ARGV[8] order id   ARGV[9] sku   ARGV[10] strategy   ARGV[11] replica
-- ARGV[12] created_at   ARGV[13] request fingerprint   ARGV[14] idempotency lifetime (s)
-- ARGV[15] customer id ('' = none)   ARGV[16] hold in seconds (0 = confirmed at once)
-- Both records' layouts (the order hash, the idempotency record) are in records.lua.
--
-- Returns {written, released, status, expires_ms}: written 1, or 0 refused (the token is no
-- longer the newest, nothing was written); released 1 when the caller's lock was passed on;
-- the created order's status and deadline (as place_order).
--
-- Every check and read comes before the first write, the hand-off's included (see
-- lock_handoff.lua): nothing after the order's writes can be refused, so an order is never
-- written by a script that then fails half-way.
local plan = nil
if ARGV[1] ~= '' then
  plan = plan_release_if_held(ARGV[1], ARGV[3])
end
local written, status, expires = 1, '', ''
local decision = tonumber(ARGV[5])
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  written = 0
elseif decision == 1 then
  local sku = {sold = KEYS[6], reserved = KEYS[8], holds = KEYS[9], customers = KEYS[10]}
  redis.call('SET', KEYS[5], ARGV[6])
  local hold_s = tonumber(ARGV[16])
  status, expires = book_units(sku, ARGV[8], tonumber(ARGV[7]), ARGV[15], hold_s,
                               hold_s > 0 and now_ms() or 0)
  write_order(KEYS[7], ARGV[8], ARGV[9], ARGV[7], ARGV[10], ARGV[11], ARGV[12], ARGV[15],
              status, expires)
end
if written == 1 and KEYS[11] then
  local order_id = decision == 1 and ARGV[8] or ''
  write_idempotency(KEYS[11], ARGV[13], decision, order_id, ARGV[6], ARGV[10], ARGV[11],
                    status, expires, ARGV[14])
end
return {written, release_as_planned(plan, ARGV[3]), status, expires}
