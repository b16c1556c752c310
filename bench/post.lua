-- wrk: POST one fixed chat request (body, auth and any extra headers from the environment).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["content-type"] = "application/json"
local key = os.getenv("BENCH_AUTH")
if key and key ~= "" then wrk.headers["authorization"] = "Bearer " .. key end
-- BENCH_HEADERS: "name: value" lines (Portkey's x-portkey-provider and custom host)
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
