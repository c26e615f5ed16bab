-- One load scenario of bench/http/run.sh, for wrk: each request is a REST call for a user drawn at
-- random from USERS users of one clinic, so that most answers take the whole path (a code compared,
-- a challenge opened and recorded) rather than a lock's refusal. SCENARIO is `verify` (a wrong code
-- against a challenge the user never had: the compare path, a guess counted, a record appended) or
-- `begin` (a challenge opened and recorded). At the end it prints the status mix, so that a run
-- that is fast because it fails shows as such.

local scenario = os.getenv("SCENARIO") or "verify"
local users = tonumber(os.getenv("USERS") or "10000")
local api_key = os.getenv("API_KEY") or ""
local org = os.getenv("ORG") or "bench-clinic"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. api_key
  statuses = {}
end

local function context(u)
  return string.format(
    '{"user_id":"u%d","org_id":"%s","email":"u%d@clinic.example","roles":["provider"],' ..
    '"device":{"ip":"10.%d.%d.7"}}',
    u, org, u, u % 250, math.floor(u / 250) % 250)
end

function request()
  local u = math.random(1, users)
  if scenario == "begin" then
    return wrk.format(nil, "/v1/login/begin", nil, '{"context":' .. context(u) .. '}')
  end
  return wrk.format(nil, "/v1/login/verify", nil,
    '{"context":' .. context(u) .. ',"challenge_id":"00000000000000000000000000000000","code":"000000"}')
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local mix = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      mix[status] = (mix[status] or 0) + n
    end
  end
  local parts, errors = {}, 0
  for status, n in pairs(mix) do
    table.insert(parts, string.format("%d x %s", n, status))
    if status >= 500 then errors = errors + n end
  end
  table.sort(parts)
  io.write(string.format("%s: %.0f req/s, p50 %.1f ms, p99 %.1f ms, statuses: %s\n",
    scenario, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, table.concat(parts, ", ")))
  io.write(string.format("5xx: %d, socket errors: %d\n", errors,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
