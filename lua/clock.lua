-- clock: Redis's own time, the one clock every replica of the service shares (included by the
-- scripts that need it, not run alone). Redis replicates a script's effects, not the script,
-- so a script may read the time and then write.

-- Redis time now, in milliseconds since the epoch.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
