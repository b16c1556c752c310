"""Lua scripts for the Redis backend; each runs atomically on the server.

Conventions shared by every script:

* ``now`` is an ARGV in integer microseconds, or ``''`` to read the server's
  ``TIME`` (Redis 5+ replicates scripts by effect, so ``TIME`` is allowed).
* Numbers going back to Redis pass through ``istr``: Lua 5.1's ``tostring``
  prints ``%.14g`` and would mangle microsecond timestamps.
* Money stays a decimal *string* in Lua (``dadd``/``dle``): Lua numbers are
  doubles and pico-USD totals pass 2^53 at about 9,000 USD, while Redis'
  ``HINCRBY`` is exact 64-bit.
"""

from __future__ import annotations

_PRELUDE = r"""
local function now_us(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function istr(x) return string.format('%.0f', x) end
"""

_MONEY = r"""
local function dadd(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then s = s + string.byte(b, j) - 48; j = j - 1 end
    out[#out + 1] = string.char(48 + s % 10)
    carry = math.floor(s / 10)
  end
  if #out == 0 then return '0' end
  return string.reverse(table.concat(out))
end
local function dle(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end
-- Holds past their expiry stop counting: give their amount back.
local function purge(h, z, now)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', istr(now))
  for _, rid in ipairs(gone) do
    local amt = redis.call('HGET', h, 'r:' .. rid)
    if amt then
      if amt ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. amt) end
      redis.call('HDEL', h, 'r:' .. rid)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', istr(now)) end
end
"""

# Budget scope i: KEYS[k0 + 2i - 1] (counter hash), KEYS[k0 + 2i] (holds zset);
# ARGV[a0 + 2i - 1] (limit or ''), ARGV[a0 + 2i] (ttl_s or ''). Its spent and
# reserved go to out[o0 + 2i - 1], out[o0 + 2i].
_BUDGET = r"""
local function budget_check(k0, a0, n, amount, now, out, o0)
  local denied = 0
  for i = 1, n do
    local h, z = KEYS[k0 + 2 * i - 1], KEYS[k0 + 2 * i]
    purge(h, z, now)
    local v = redis.call('HMGET', h, 'spent', 'reserved')
    local spent, reserved = v[1] or '0', v[2] or '0'
    local limit = ARGV[a0 + 2 * i - 1]
    if denied == 0 and limit ~= '' and not dle(dadd(dadd(spent, reserved), amount), limit) then
      denied = i
    end
    out[o0 + 2 * i - 1] = spent
    out[o0 + 2 * i] = reserved
  end
  return denied
end
local function budget_hold(k0, a0, n, amount, rid, expires, out, o0)
  for i = 1, n do
    local h, z = KEYS[k0 + 2 * i - 1], KEYS[k0 + 2 * i]
    redis.call('HINCRBY', h, 'reserved', amount)
    redis.call('HSET', h, 'r:' .. rid, amount)
    redis.call('ZADD', z, expires, rid)
    local ttl = ARGV[a0 + 2 * i]
    if ttl ~= '' then
      redis.call('EXPIRE', h, ttl)
      redis.call('EXPIRE', z, ttl)
    end
    out[o0 + 2 * i] = dadd(out[o0 + 2 * i], amount)
  end
end
"""

# GCRA as a continuous-state leaky bucket: 'l' = level in units, 't' = when.
# Limit i: KEYS[k0 + i] (bucket hash); ARGV[a0 + 3i - 2 .. a0 + 3i] (limit,
# period_us, cost or delta).
_RATE = r"""
local function rate_levels(k0, a0, n, now, adjust)
  local levels, ok = {}, true
  for i = 1, n do
    local a = a0 + 3 * i
    local limit, period, cost = tonumber(ARGV[a - 2]), tonumber(ARGV[a - 1]), tonumber(ARGV[a])
    local v = redis.call('HMGET', KEYS[k0 + i], 'l', 't')
    local level = 0
    if v[1] then
      level = math.max(0, tonumber(v[1]) - math.max(0, now - tonumber(v[2])) * limit / period)
    end
    levels[i] = level
    if not adjust and level + cost > limit + 1e-9 then ok = false end
  end
  return levels, ok
end
local function rate_take(k0, a0, levels, now)
  for i = 1, #levels do
    local a = a0 + 3 * i
    local limit, period = tonumber(ARGV[a - 2]), tonumber(ARGV[a - 1])
    local level = math.max(0, levels[i] + tonumber(ARGV[a]))
    if level > 0 then
      redis.call('HSET', KEYS[k0 + i], 'l', string.format('%.17g', level), 't', istr(now))
      redis.call('PEXPIRE', KEYS[k0 + i], istr(math.ceil(level * period / limit / 1000) + 1000))
    else
      redis.call('DEL', KEYS[k0 + i])
    end
    levels[i] = level
  end
end
local function rate_out(levels, out, o0)
  for i = 1, #levels do out[o0 + i] = string.format('%.17g', levels[i]) end
end
"""

# KEYS: record, then (counter hash, holds zset) per scope.
# ARGV: amount, reservation id, hold_us, now, record_ms, record_json,
#       then (limit or '', ttl_s or '') per scope.
# Returns {status, denied index, spent_1, reserved_1, ...}; status -1 = id reused.
RESERVE = (
    _PRELUDE
    + _MONEY
    + _BUDGET
    + r"""
local now = now_us(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0} end
local n, out = (#KEYS - 1) / 2, {0, 0}
local denied = budget_check(1, 6, n, ARGV[1], now, out, 2)
if denied > 0 then
  out[2] = denied
  return out
end
budget_hold(1, 6, n, ARGV[1], ARGV[2], istr(now + tonumber(ARGV[3])), out, 2)
redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[5])
out[1] = 1
return out
"""
)

# RATE (acquire) and RESERVE in one: every limit's units and the hold, or nothing.
# KEYS: record, (counter hash, holds zset) per scope, then one bucket per limit.
# ARGV: RESERVE's six, the number of scopes, (limit, ttl_s) per scope, then
#       (limit, period_us, cost) per limit.
# Returns {status, denied index, 1 if the limits had room else 0, spent_1,
# reserved_1, ..., level_1, ...}; status -1 = id reused, nothing read. When
# the limits had no room the scopes are not read (their entries are '0').
ADMIT = (
    _PRELUDE
    + _MONEY
    + _BUDGET
    + _RATE
    + r"""
local now = now_us(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0, 0} end
local n = tonumber(ARGV[7])
local nr, ra = #KEYS - 1 - 2 * n, 7 + 2 * n
local out = {0, 0, 0}
for i = 4, 3 + 2 * n do out[i] = '0' end
local levels, room = rate_levels(1 + 2 * n, ra, nr, now, false)
if room then
  out[3] = 1
  out[2] = budget_check(1, 7, n, ARGV[1], now, out, 3)
  if out[2] == 0 then
    rate_take(1 + 2 * n, ra, levels, now)
    budget_hold(1, 7, n, ARGV[1], ARGV[2], istr(now + tonumber(ARGV[3])), out, 3)
    redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[5])
    out[1] = 1
  end
end
rate_out(levels, out, 3 + 2 * n)
return out
"""
)

# KEYS: record, then (counter hash, holds zset) per scope.
# ARGV: actual pico ('0' to release), reservation id, done_ms, the record the
#       caller expects (its scopes, as RESERVE stored it); scope i's ttl_s or ''
#       at ARGV[a0 + i].
# finish returns 1 when applied, 0 when unknown or already finished, -1
# (nothing changed) when the record names other scopes than the KEYS given.
_FINISH = r"""
local function finish(n, a0)
  local rec = redis.call('GET', KEYS[1])
  if not rec or rec == 'done' then return 0 end
  if rec ~= ARGV[4] then return -1 end
  local actual, rid = ARGV[1], ARGV[2]
  for i = 1, n do
    local h, z = KEYS[2 * i], KEYS[2 * i + 1]
    local amt = redis.call('HGET', h, 'r:' .. rid)
    if amt then
      if amt ~= '0' then redis.call('HINCRBY', h, 'reserved', '-' .. amt) end
      redis.call('HDEL', h, 'r:' .. rid)
      redis.call('ZREM', z, rid)
    end
    if actual ~= '0' then redis.call('HINCRBY', h, 'spent', actual) end
    local ttl = ARGV[a0 + i]
    if ttl ~= '' then
      redis.call('EXPIRE', h, ttl)
      redis.call('EXPIRE', z, ttl)
    end
  end
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[3])
  return 1
end
"""

# ARGV: the four above, then ttl_s or '' per scope.
FINISH = _FINISH + "\nreturn finish((#KEYS - 1) / 2, 4)\n"

# FINISH, then the token counters adjusted (RATE's 'adjust'), in one trip.
# KEYS: FINISH's, then one bucket per limit.
# ARGV: FINISH's four, now, the number of scopes, ttl_s or '' per scope, then
#       (limit, period_us, delta) per limit.
# Returns {FINISH's answer, level_1, ...}; {-1} changed nothing at all.
SETTLE = (
    _PRELUDE
    + _RATE
    + _FINISH
    + r"""
local n = tonumber(ARGV[6])
local done = finish(n, 6)
if done == -1 then return {-1} end
local now, k0, a0 = now_us(ARGV[5]), 1 + 2 * n, 6 + n
local levels = rate_levels(k0, a0, #KEYS - k0, now, true)
rate_take(k0, a0, levels, now)
local out = {done}
rate_out(levels, out, 1)
return out
"""
)

# KEYS: counter hash, holds zset. ARGV: now. Returns {spent, reserved}.
USAGE = (
    _PRELUDE
    + _MONEY
    + r"""
purge(KEYS[1], KEYS[2], now_us(ARGV[1]))
local v = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
return {v[1] or '0', v[2] or '0'}
"""
)

# KEYS: one bucket hash per limit.
# ARGV: now, mode ('acquire' | 'adjust'), then (limit, period_us, cost or delta) per key.
# Returns {1 if applied else 0, level_1, level_2, ...} (levels after the call, %.17g).
RATE = (
    _PRELUDE
    + _RATE
    + r"""
local now = now_us(ARGV[1])
local levels, ok = rate_levels(0, 2, #KEYS, now, ARGV[2] == 'adjust')
if ok then rate_take(0, 2, levels, now) end
local out = {ok and 1 or 0}
rate_out(levels, out, 1)
return out
"""
)

# Breaker hash: 's' = 'open' | 'half_open', 'at' = when opened / probe claimed,
# 'cd' = its own cooldown (set by BREAKER_TRIP; absent: the store's, ARGV).
# No hash means closed. Every transition is PUBLISHed so instances drop their
# local view at once.

# KEYS: breaker hash. ARGV: now, cooldown_us, channel, deployment id, keep_ms.
# Returns {allowed 0|1, state, microseconds until the state may change}.
BREAKER_ALLOW = (
    _PRELUDE
    + r"""
local now = now_us(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 's', 'at', 'cd')
if not v[1] then return {1, 'closed', '0'} end
local cooldown = tonumber(v[3]) or tonumber(ARGV[2])
local at = tonumber(v[2])
-- Open past its cooldown, or a claimed probe that never reported: claim it.
if now >= at + cooldown then
  redis.call('HSET', KEYS[1], 's', 'half_open', 'at', istr(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
  return {1, 'half_open', istr(cooldown)}
end
return {0, v[1], istr(at + cooldown - now)}
"""
)

# KEYS: breaker hash, failures zset.
# ARGV: now, ok ('1'|'0'), failures, window_us, cooldown_us, channel,
#       deployment id, unique failure member, keep_ms.
# Returns {state, microseconds until it may change}.
BREAKER_RECORD = (
    _PRELUDE
    + r"""
local now = now_us(ARGV[1])
local ok = ARGV[2] == '1'
local v = redis.call('HMGET', KEYS[1], 's', 'at', 'cd')
local cooldown = tonumber(v[3]) or tonumber(ARGV[5])
local state = v[1] or 'closed'
local function trip()
  redis.call('HSET', KEYS[1], 's', 'open', 'at', istr(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[9])
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  return {'open', istr(cooldown)}
end
if state == 'closed' then
  if ok then return {'closed', '0'} end
  local window = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[2], istr(now), ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', istr(now - window))
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return trip() end
  redis.call('PEXPIRE', KEYS[2], istr(math.ceil(window / 1000)))
  return {'closed', '0'}
end
-- A straggler that started before the breaker opened proves nothing.
if state == 'open' then return {'open', istr(math.max(0, tonumber(v[2]) + cooldown - now))} end
if ok then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[6], ARGV[7])
  return {'closed', '0'}
end
return trip()
"""
)

# KEYS: breaker hashes. ARGV: now, cooldown_us.
# Returns {state_1, us_until_change_1, ...} (negative once the cooldown is over).
BREAKER_READ = (
    _PRELUDE
    + r"""
local now = now_us(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 's', 'at', 'cd')
  if v[1] then
    out[2 * i - 1] = v[1]
    out[2 * i] = istr(tonumber(v[2]) + (tonumber(v[3]) or tonumber(ARGV[2])) - now)
  else
    out[2 * i - 1] = 'closed'
    out[2 * i] = '0'
  end
end
return out
"""
)

# KEYS: breaker hash, failures zset. ARGV: now, cooldown_us, channel, deployment id, keep_ms.
# Opens the breaker now, whatever its state, with its own cooldown.
BREAKER_TRIP = (
    _PRELUDE
    + r"""
local now = now_us(ARGV[1])
redis.call('HSET', KEYS[1], 's', 'open', 'at', istr(now), 'cd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
)
