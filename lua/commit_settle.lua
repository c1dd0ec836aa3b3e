--#include lock_handoff
--#include holds
-- commit_settle: the write half of a `lock` confirm or cancel (and of the unsafe `none`
-- control's). The caller read the order and the stock (after expire_holds) and decided; this
-- writes the decision while the caller's fencing token is still the newest (see
-- commit_order.lua), then passes the caller's lock on.
--
-- KEYS[1..4] the SKU's lock, its fencing counter, queue and deadlines (see lock_handoff.lua)
-- KEYS[5]  hash of the order    KEYS[6] stock counter    KEYS[7] sold counter
-- KEYS[8]  reserved counter    KEYS[9] holds    KEYS[10] units per customer
-- ARGV[1]  the holder's lock token ('' = no lock to release)   ARGV[2] lease in ms
-- ARGV[3]  grant list prefix    ARGV[4] fencing token ('' skips the check: unsafe control)
-- ARGV[5]  decision: 'confirm', 'cancel', or '' (nothing to write: only release)
-- ARGV[6]  stock value decided by the caller for a cancel (the stock it saw + the quantity)
-- ARGV[7]  the order's id    ARGV[8] prefix of the SKU's order hashes
--
-- Returns {written, released, expired}: written and released as commit_order; expired > 0
-- when the order's deadline passed between the caller's read and this write (a slow round
-- trip, a WAIT): its hold is expired here instead, with any other due one (expired counts
-- them), and the decision dropped.
local plan = nil
if ARGV[1] ~= '' then
  plan = plan_release_if_held(ARGV[1], ARGV[3])
end
local written, expired = 1, 0
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  written = 0
elseif ARGV[5] ~= '' then
  local sku = {stock = KEYS[6], sold = KEYS[7], reserved = KEYS[8], holds = KEYS[9],
               customers = KEYS[10], order_prefix = ARGV[8]}
  local now = now_ms()
  local deadline = tonumber(redis.call('ZSCORE', KEYS[9], ARGV[7]))
  if deadline and deadline <= now then
    expired = expire_due(sku, now)  -- inside the caller's lock: its token stays the newest
  else
    settle(sku, KEYS[5], ARGV[7], ARGV[5])
    if ARGV[5] == 'cancel' then
      redis.call('SET', KEYS[6], ARGV[6])
    end
  end
end
return {written, release_as_planned(plan, ARGV[3]), expired}
