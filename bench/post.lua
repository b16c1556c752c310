-- wrk: POST one fixed chat request (body and auth from the environment).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["content-type"] = "application/json"
local key = os.getenv("BENCH_AUTH")
if key and key ~= "" then wrk.headers["authorization"] = "Bearer " .. key end
