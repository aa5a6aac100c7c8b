-- Request replay for `wrk`, used by bench/serve.py:
--   wrk -t1 -c8 -d15s --timeout 30s -s bench/wrk.lua http://127.0.0.1:8000 -- requests.tsv
-- requests.tsv holds one request per line, "METHOD<TAB>PATH<TAB>BODY" (BODY may be empty, and is
-- one line of JSON). Connections take the requests in order, cycling. At the end one line
-- "WRK_JSON {...}" gives the request count, errors and latency percentiles in microseconds.

local requests = {}
local next_index = 0

function init(args)
  local path = args[1] or error("usage: wrk ... -s wrk.lua URL -- requests.tsv")
  for line in io.lines(path) do
    local method, target, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    if method == nil then error("bad request line: " .. line) end
    local headers = { ["Content-Type"] = "application/json" }
    if args[2] then headers["Authorization"] = args[2] end  -- an API key: "Bearer KEY"
    if body == "" then body = nil end
    requests[#requests + 1] = wrk.format(method, target, headers, body)
  end
  if #requests == 0 then error("no requests in " .. path) end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
      .. '"max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
