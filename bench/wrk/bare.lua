-- GET /const with the same query-string shape as /predict (the bare endpoint ignores it).
local max_user = tonumber(os.getenv("MAX_USER") or "943")
local max_movie = tonumber(os.getenv("MAX_MOVIE") or "1682")
function init(args)
  math.randomseed(tonumber(os.getenv("SEED") or "1"))
end
request = function()
  return wrk.format("GET", "/const?user_id=" .. math.random(1, max_user) .. "&movie_id=" .. math.random(1, max_movie))
end
