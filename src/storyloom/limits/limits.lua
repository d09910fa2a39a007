-- The rules of storyloom/limits/state.py, for Redis: one key per deployment holding the same
-- JSON document, changed atomically by this script. Keep the two in step (tests run both).
-- ARGV[1] = command, ARGV[2] = JSON arguments; KEYS = the deployments' state keys.
local cmd = ARGV[1]
local a = cjson.decode(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local SLOTS = 6
local NULL = cjson.null

local function load(key)
  local raw = redis.call('GET', key)
  if not raw then
    return {rpm = {NULL, 0}, tpm = {NULL, 0}, leases = {}, blocked_until = 0, claims = {},
            br = {state = 'closed', slots = {}, open_until = 0, probe = NULL, trips = 0}}
  end
  return cjson.decode(raw)
end

local function save(key, st, ttl)
  if st.spent ~= nil then  -- a tenant budget: what was spent must not expire with idleness
    redis.call('SET', key, cjson.encode(st))
  else
    redis.call('SET', key, cjson.encode(st), 'EX', ttl)
  end
end

local function is_null(v) return v == nil or v == NULL end

local function rate(quota, ask)
  local cap = math.max(1.0, ask.headroom * quota)
  return (quota - cap) / (ask.window_s + 1.0), cap  -- 1.0: _JITTER_S in state.py
end

local function level(bucket, quota, ask)
  local r, cap = rate(quota, ask)
  if is_null(bucket[1]) then return cap end
  return math.min(cap, bucket[1] + math.max(0, now - bucket[2]) * r)
end

local function bucket_wait(bucket, quota, ask, cost)
  if is_null(quota) then return 0 end
  local r, cap = rate(quota, ask)
  local need = math.min(cost, cap)
  local lv = level(bucket, quota, ask)
  if lv >= need then return 0 end
  return (need - lv) / r
end

local function debit(bucket, quota, ask, cost)
  if is_null(quota) then return end
  bucket[1] = level(bucket, quota, ask) - cost
  bucket[2] = math.max(bucket[2], now)
end

local function count(tbl)
  local n = 0
  for _ in pairs(tbl) do n = n + 1 end
  return n
end

local function prune(st)
  if st.claims == nil then st.claims = {} end
  for cid, c in pairs(st.claims) do
    if c[4] <= now then st.claims[cid] = nil end
  end
  for lid, exp in pairs(st.leases) do
    if exp <= now then st.leases[lid] = nil end
  end
  if not is_null(st.br.probe) and st.leases[st.br.probe] == nil then st.br.probe = NULL end
end

-- wait: -1 = unknown (poll), else seconds
local function sooner(cur, w)
  if cur == -1 or w == -1 then return -1 end
  return math.min(cur, w)
end

-- (number, tokens) of the claims ahead of `claim` on this deployment (see Claim in state.py)
local function ahead(st, claim)
  if is_null(claim) then return 0, 0 end
  local mine = st.claims[claim.id]
  local since = now
  if mine ~= nil then since = mine[3] end
  local n, tokens = 0, 0
  for cid, c in pairs(st.claims) do
    if cid ~= claim.id and (c[1] > claim.priority or (c[1] == claim.priority and c[3] < since)) then
      n = n + 1; tokens = tokens + c[2]
    end
  end
  return n, tokens
end

local function settle_claims(states, granted)
  if is_null(a.claim) then return end
  for i, st in ipairs(states) do
    if granted then
      st.claims[a.claim.id] = nil
    else
      local old = st.claims[a.claim.id]
      local since = now
      if old ~= nil then since = old[3] end
      st.claims[a.claim.id] = {a.claim.priority, a.cost, since, now + a.claim_ttl_s}
    end
    save(KEYS[i], st, a.key_ttl_s)
  end
end

if cmd == 'acquire' then
  local asks, states = a.asks, {}
  local best, best_load, best_probe = nil, nil, false
  local soonest, reason, by_breaker = math.huge, 'none', 0
  for i, ask in ipairs(asks) do
    local st = load(KEYS[i])
    states[i] = st
    prune(st)
    local br = st.br
    local probe = false
    local skip = false
    if br.state == 'open' then
      if now < br.open_until then
        soonest = sooner(soonest, br.open_until - now); by_breaker = by_breaker + 1; skip = true
      else
        br.state = 'half_open'
      end
    end
    if not skip and br.state == 'half_open' then
      if not is_null(br.probe) then
        soonest = sooner(soonest, -1); by_breaker = by_breaker + 1; skip = true
      else
        probe = true
      end
    end
    if not skip and now < st.blocked_until then
      soonest = sooner(soonest, st.blocked_until - now); reason = 'retry_after'; skip = true
    end
    local busy = count(st.leases)
    local n_ahead, tokens_ahead = ahead(st, a.claim)
    if not skip and not is_null(ask.concurrency) and busy + n_ahead >= ask.concurrency then
      soonest = sooner(soonest, -1); reason = 'concurrency'; skip = true
    end
    if not skip then
      local w = math.max(bucket_wait(st.rpm, ask.rpm, ask, 1.0 + n_ahead),
                         bucket_wait(st.tpm, ask.tpm, ask, a.cost + tokens_ahead))
      if w > 0 then
        soonest = sooner(soonest, w); reason = 'rate'; skip = true
      end
    end
    if not skip then
      local conc = ask.concurrency
      if is_null(conc) then conc = 1000 end
      local load_ = (busy + 1) / conc / math.max(ask.weight, 1e-9)
      if best == nil or load_ < best_load then best, best_load, best_probe = i, load_, probe end
    end
  end
  if best == nil then
    if by_breaker == #asks then reason = 'open' end
    -- half-open transitions are saved only with a claim; the next acquire re-derives them anyway.
    settle_claims(states, false)
    if soonest == math.huge then soonest = -1 end
    return cjson.encode({granted = false, wait_s = soonest, reason = reason})
  end
  local ask, st = asks[best], states[best]
  debit(st.rpm, ask.rpm, ask, 1.0)
  debit(st.tpm, ask.tpm, ask, a.cost)
  st.leases[a.lease_id] = now + a.lease_ttl_s
  if best_probe then st.br.probe = a.lease_id end
  save(KEYS[best], st, a.key_ttl_s)
  settle_claims(states, true)
  return cjson.encode({granted = true, deployment = ask.name, probe = best_probe})
end

if cmd == 'release' then
  local st = load(KEYS[1])
  local ask, out, pol = a.ask, a.outcome, a.policy
  st.leases[a.lease_id] = nil
  if not is_null(out.actual_tokens) and not is_null(ask.tpm) then
    debit(st.tpm, ask.tpm, ask, out.actual_tokens - out.reserved_tokens)
  end
  local br = st.br
  local was_probe = br.probe == a.lease_id
  if was_probe then br.probe = NULL end
  if out.kind == 'rate_limited' then
    local pause = 1.0
    if not is_null(out.retry_after_s) then pause = out.retry_after_s end
    st.blocked_until = math.max(st.blocked_until, now + pause)
  elseif out.kind ~= 'neutral' then
    local slot = math.floor(now / (pol.window_s / SLOTS))
    local slots = {}
    for _, s in ipairs(br.slots) do
      if s[1] > slot - SLOTS then slots[#slots + 1] = s end
    end
    if #slots == 0 or slots[#slots][1] ~= slot then slots[#slots + 1] = {slot, 0, 0} end
    if out.kind == 'ok' then
      slots[#slots][2] = slots[#slots][2] + 1
    else
      slots[#slots][3] = slots[#slots][3] + 1
    end
    br.slots = slots
    if out.kind == 'ok' then
      br.streak = 0
      if br.state == 'half_open' and was_probe then
        br.state = 'closed'; br.slots = {}; br.trips = 0
      end
    else
      br.streak = (br.streak or 0) + 1
      local fails, total = 0, 0
      for _, s in ipairs(slots) do fails = fails + s[3]; total = total + s[2] + s[3] end
      local trip = (br.state == 'half_open' and was_probe) or
        (br.state == 'closed' and fails >= pol.min_failures and
         (fails >= pol.failure_rate * total or br.streak >= pol.min_failures))
      if trip then
        local period = math.min(pol.max_open_s, pol.open_s * (2 ^ math.min(br.trips, 4))) * (1.0 + 0.5 * a.jitter)
        local ra = 0
        if not is_null(out.retry_after_s) then ra = out.retry_after_s end
        period = math.max(period, ra)
        br.state = 'open'; br.open_until = now + period; br.trips = br.trips + 1
        br.probe = NULL; br.slots = {}
      end
    end
  end
  save(KEYS[1], st, a.key_ttl_s)
  return 'ok'
end

if cmd == 'renew' then
  for i, ids in ipairs(a.leases) do
    local st = load(KEYS[i])
    for _, lid in ipairs(ids) do
      if st.leases[lid] ~= nil then st.leases[lid] = now + a.lease_ttl_s end
    end
    save(KEYS[i], st, a.key_ttl_s)
  end
  return 'ok'
end

if cmd == 'snapshot' then
  local out = {}
  for i = 1, #KEYS do out[i] = load(KEYS[i]) end
  return cjson.encode(out)
end

-- Tenant budgets (budget_* in state.py): {spent, leases = {hold -> expires_at}, holds = {hold -> usd}}
local function load_budget(key)
  local raw = redis.call('GET', key)
  local st
  if raw then st = cjson.decode(raw) else st = {} end
  if st.spent == nil then st.spent = 0 end
  if st.leases == nil then st.leases = {} end
  if st.holds == nil then st.holds = {} end
  for hid, exp in pairs(st.leases) do
    if exp <= now then st.leases[hid] = nil end
  end
  local held = 0
  for hid, usd in pairs(st.holds) do
    if st.leases[hid] == nil then st.holds[hid] = nil else held = held + usd end
  end
  return st, held
end

if cmd == 'budget_reserve' then
  local st, held = load_budget(KEYS[1])
  local spent = st.spent
  if spent + held + a.amount > a.budget then
    save(KEYS[1], st, a.key_ttl_s)
    return cjson.encode({granted = false, spent = spent, held = held})
  end
  st.leases[a.hold_id] = now + a.lease_ttl_s
  st.holds[a.hold_id] = a.amount
  save(KEYS[1], st, a.key_ttl_s)
  return cjson.encode({granted = true, spent = spent, held = held})
end

if cmd == 'budget_settle' then
  local st = load_budget(KEYS[1])
  st.leases[a.hold_id] = nil
  st.holds[a.hold_id] = nil
  st.spent = st.spent + a.actual
  save(KEYS[1], st, a.key_ttl_s)
  return 'ok'
end

if cmd == 'budget_usage' then
  local st, held = load_budget(KEYS[1])
  return cjson.encode({spent = st.spent, held = held})
end

return redis.error_reply('unknown command ' .. tostring(cmd))
