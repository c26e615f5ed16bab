-- One first-time user per request: POST <path>/<run>-<thread>-<n>. Counts non-2xx answers.
local threads = {}
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  bad = 0
  run = os.getenv("BENCH_RUN") or "r"
end

function request()
  n = n + 1
  return wrk.format("POST", wrk.path .. "/" .. run .. "-" .. tid .. "-" .. n)
end

function response(status, headers, body)
  if status >= 300 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
  end
  io.write(string.format("requests: %d, non-2xx: %d, socket errors: %d\n", summary.requests, total_bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("latency p50 %.1f ms, p99 %.1f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
