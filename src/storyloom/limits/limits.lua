-- The rules of storyloom/limits/state.py, breaker.py and budgets.py, for Redis: one key per
-- deployment (or tenant budget period) holding the same JSON document, changed atomically by this
-- script. Keep them in step: the contract tests run every backend against the same expectations.
-- ARGV[1] = command, ARGV[2] = JSON arguments; KEYS = the documents' keys.
local cmd = ARGV[1]
local a = cjson.decode(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local SLOTS = 12  -- breaker.SLOTS
local NULL = cjson.null
local pol = a.policy

local function new_breaker()
  return {state = 'closed', slots = {}, open_until = 0, trips = 0, probes = {}, probe_ok = 0,
          probe_fail = 0, closed_at = 0, peak = 0, opens = 0}
end

local function load(key)
  local raw = redis.call('GET', key)
  local st
  if not raw then
    st = {rpm = {NULL, 0}, tpm = {NULL, 0}, leases = {}, starts = {}, blocked_until = 0, claims = {},
          br = new_breaker()}
  else
    st = cjson.decode(raw)
  end
  if st.spent == nil then  -- a deployment (not a budget): a breaker of the old layout starts afresh
    if type(st.br) ~= 'table' or st.br.probes == nil then st.br = new_breaker() end
    if st.starts == nil then st.starts = {} end
  end
  return st
end

local function is_null(v) return v == nil or v == NULL end

local function save(key, st, ttl)
  if st.spent ~= nil then  -- a tenant budget: kept until its period is long over (lifetime: forever)
    redis.call('SET', key, cjson.encode(st))
    if not is_null(st.expires_at) then redis.call('EXPIREAT', key, math.ceil(st.expires_at)) end
  else
    redis.call('SET', key, cjson.encode(st), 'EX', ttl)
  end
end

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
  for lid in pairs(st.starts) do
    if st.leases[lid] == nil then st.starts[lid] = nil end
  end
  for lid in pairs(st.br.probes) do
    if st.leases[lid] == nil then st.br.probes[lid] = nil end
  end
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

-- the breaker (breaker.py) -------------------------------------------------------------------------
local function slot_of(x) return math.floor(x / (pol.window_s / SLOTS)) end

local function ramp_full(br, conc)
  if is_null(conc) then return math.max(br.peak, pol.half_open_calls) end
  return conc
end

local function ramp_cap(br, conc)
  if br.state ~= 'closed' or pol.ramp_s <= 0 or now >= br.closed_at + pol.ramp_s then return nil end
  local share = pol.ramp_start + (1.0 - pol.ramp_start) * (now - br.closed_at) / pol.ramp_s
  return math.max(pol.half_open_calls, math.floor(ramp_full(br, conc) * share))
end

local function ramp_wait(br, conc)
  local step = pol.ramp_s / math.max(1.0, ramp_full(br, conc) * (1.0 - pol.ramp_start))
  return math.max(0.001, math.min(br.closed_at + pol.ramp_s - now, step))
end

local function trip(br, retry_after, jitter)
  local period = math.min(pol.max_open_s, pol.open_s * (2 ^ math.min(br.trips, 4))) * (1.0 + 0.5 * jitter)
  if not is_null(retry_after) then period = math.max(period, retry_after) end
  br.state = 'open'; br.open_until = now + period; br.trips = br.trips + 1
  br.opens = (br.opens or 0) + 1
  br.probes = {}; br.probe_ok = 0; br.probe_fail = 0; br.slots = {}; br.closed_at = 0
end

local function rate_reached(st, slots, cur, lo)
  local in_flight = {}
  for _, s in pairs(st.starts) do
    if s >= lo then in_flight[s] = (in_flight[s] or 0) + 1 end
  end
  local fails, oks, pending = 0, 0, 0
  for j = cur, lo, -1 do
    local c = slots[tostring(j)]
    if c ~= nil then oks = oks + c[1]; fails = fails + c[2] end
    pending = pending + (in_flight[j] or 0)
    if fails + oks >= pol.minimum_calls and fails >= pol.failure_rate * (fails + oks + pending) then
      return true
    end
  end
  return false
end

local function on_outcome(st, was_probe, start_slot, ok, retry_after, jitter)
  local br = st.br
  if was_probe then
    if br.state ~= 'half_open' then return end
    if ok then br.probe_ok = br.probe_ok + 1 else br.probe_fail = br.probe_fail + 1 end
    local n, r = pol.half_open_calls, pol.failure_rate
    if br.probe_fail >= r * n then
      trip(br, retry_after, jitter)
    elseif n - br.probe_ok < r * n then
      br.state = 'closed'; br.slots = {}; br.trips = 0; br.probes = {}; br.closed_at = now
    end
    return
  end
  if br.state ~= 'closed' then return end
  local cur = slot_of(now)
  local lo = cur - SLOTS + 1
  local slots = {}
  for k, v in pairs(br.slots) do
    if tonumber(k) >= lo then slots[k] = v end
  end
  local slot = cur
  if not is_null(start_slot) then slot = start_slot end
  if slot >= lo then
    local key = tostring(slot)
    local c = slots[key]
    if c == nil then c = {0, 0}; slots[key] = c end
    if ok then c[1] = c[1] + 1 else c[2] = c[2] + 1 end
  end
  br.slots = slots
  if not ok and rate_reached(st, slots, cur, lo) then trip(br, retry_after, jitter) end
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
        br.state = 'half_open'; br.probes = {}; br.probe_ok = 0; br.probe_fail = 0
      end
    end
    if not skip and br.state == 'half_open' then
      if count(br.probes) + br.probe_ok + br.probe_fail >= pol.half_open_calls then
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
      local cap = ramp_cap(br, ask.concurrency)
      if cap ~= nil and busy + n_ahead >= cap then
        soonest = sooner(soonest, ramp_wait(br, ask.concurrency)); reason = 'ramp'; skip = true
      end
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
  st.starts[a.lease_id] = slot_of(now)
  if best_probe then
    st.br.probes[a.lease_id] = 1
  elseif st.br.state == 'closed' then
    st.br.peak = math.max(st.br.peak, count(st.leases))
  end
  save(KEYS[best], st, a.key_ttl_s)
  settle_claims(states, true)
  return cjson.encode({granted = true, deployment = ask.name, probe = best_probe})
end

if cmd == 'release' then
  local st = load(KEYS[1])
  local ask, out = a.ask, a.outcome
  st.leases[a.lease_id] = nil
  local br = st.br
  local start_slot = st.starts[a.lease_id]
  st.starts[a.lease_id] = nil
  local was_probe = br.probes[a.lease_id] ~= nil  -- a 429 or neutral probe frees its place
  br.probes[a.lease_id] = nil
  prune(st)
  if not is_null(out.actual_tokens) and not is_null(ask.tpm) then
    debit(st.tpm, ask.tpm, ask, out.actual_tokens - out.reserved_tokens)
  end
  if out.kind == 'rate_limited' then
    local pause = 1.0
    if not is_null(out.retry_after_s) then pause = out.retry_after_s end
    st.blocked_until = math.max(st.blocked_until, now + pause)
  elseif out.kind == 'ok' or out.kind == 'fail' then
    on_outcome(st, was_probe, start_slot, out.kind == 'ok', out.retry_after_s, a.jitter)
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

-- Tenant budgets (budgets.py): {spent, spent_tokens, leases = {hold -> expires_at},
-- holds = {hold -> usd}, hold_tokens = {hold -> tokens}, expires_at}, one document per period
local function load_budget(key)
  local raw = redis.call('GET', key)
  local st
  if raw then st = cjson.decode(raw) else st = {} end
  if st.spent == nil then st.spent = 0 end
  if st.spent_tokens == nil then st.spent_tokens = 0 end
  if st.leases == nil then st.leases = {} end
  if st.holds == nil then st.holds = {} end
  if st.hold_tokens == nil then st.hold_tokens = {} end
  if st.expires_at == nil then st.expires_at = NULL end
  for hid, exp in pairs(st.leases) do
    if exp <= now then st.leases[hid] = nil end
  end
  local held, held_tokens = 0, 0
  for hid, usd in pairs(st.holds) do
    if st.leases[hid] == nil then st.holds[hid] = nil else held = held + usd end
  end
  for hid, n in pairs(st.hold_tokens) do
    if st.leases[hid] == nil then st.hold_tokens[hid] = nil else held_tokens = held_tokens + n end
  end
  return st, held, held_tokens
end

if cmd == 'budget_reserve' then
  local states = {}
  for i, spec in ipairs(a.specs) do
    local st, held, held_tokens = load_budget(KEYS[i])
    if is_null(st.expires_at) and not is_null(spec.expires_at) then st.expires_at = spec.expires_at end
    states[i] = st
    if (not is_null(spec.usd) and st.spent + held + a.amount > spec.usd) or
       (not is_null(spec.tokens) and st.spent_tokens + held_tokens + a.tokens > spec.tokens) then
      return cjson.encode({index = i - 1, spent = st.spent, held = held, spent_tokens = st.spent_tokens,
                           held_tokens = held_tokens})
    end
  end
  for i, st in ipairs(states) do
    st.leases[a.hold_id] = now + a.lease_ttl_s
    st.holds[a.hold_id] = a.amount
    st.hold_tokens[a.hold_id] = a.tokens
    save(KEYS[i], st, a.key_ttl_s)
  end
  return cjson.encode({index = -1})
end

if cmd == 'budget_settle' then
  for i = 1, #KEYS do
    -- a document that is gone is a period long over (expired): its late cost is moot
    if redis.call('EXISTS', KEYS[i]) == 1 then
    local st = load_budget(KEYS[i])
    st.leases[a.hold_id] = nil
    st.holds[a.hold_id] = nil
    st.hold_tokens[a.hold_id] = nil
    st.spent = st.spent + a.actual
    st.spent_tokens = st.spent_tokens + a.tokens
    save(KEYS[i], st, a.key_ttl_s)
    end
  end
  return 'ok'
end

if cmd == 'budget_usage' then
  local st, held, held_tokens = load_budget(KEYS[1])
  return cjson.encode({spent = st.spent, held = held, spent_tokens = st.spent_tokens, held_tokens = held_tokens})
end

return redis.error_reply('unknown command ' .. tostring(cmd))
