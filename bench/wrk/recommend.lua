-- GET /recommend?n=10 for a random known user per request. env: MAX_USER, SEED, EXPLAIN (1: &explain=true)
local max_user = tonumber(os.getenv("MAX_USER") or "943")
local suffix = os.getenv("EXPLAIN") == "1" and "&explain=true" or ""
function init(args)
  math.randomseed(tonumber(os.getenv("SEED") or "1"))
end
request = function()
  return wrk.format("GET", "/recommend?user_id=" .. math.random(1, max_user) .. "&n=10" .. suffix)
end
