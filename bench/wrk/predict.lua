-- GET /predict with a random known user and movie per request.
-- env: MAX_USER, MAX_MOVIE (ids 1..MAX), SEED
local max_user = tonumber(os.getenv("MAX_USER") or "943")
local max_movie = tonumber(os.getenv("MAX_MOVIE") or "1682")
local counter = 0
function init(args)
  math.randomseed(tonumber(os.getenv("SEED") or "1") + (id or 0))
end
request = function()
  local u = math.random(1, max_user)
  local m = math.random(1, max_movie)
  return wrk.format("GET", "/predict?user_id=" .. u .. "&movie_id=" .. m)
end
