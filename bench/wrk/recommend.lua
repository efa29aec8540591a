-- GET /recommend?n=10 for a random known user per request. env: MAX_USER, SEED
local max_user = tonumber(os.getenv("MAX_USER") or "943")
function init(args)
  math.randomseed(tonumber(os.getenv("SEED") or "1"))
end
request = function()
  return wrk.format("GET", "/recommend?user_id=" .. math.random(1, max_user) .. "&n=10")
end
