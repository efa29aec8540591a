-- POST /ratings, one rating per request, JSON body; users from a range no other scenario reads
-- (USER_BASE .. USER_BASE+USER_SPAN-1) so reads elsewhere are not turned into fold-ins.
-- env: USER_BASE, USER_SPAN, MAX_MOVIE, SEED
local base = tonumber(os.getenv("USER_BASE") or "100000")
local span = tonumber(os.getenv("USER_SPAN") or "10000")
local max_movie = tonumber(os.getenv("MAX_MOVIE") or "1682")
function init(args)
  math.randomseed(tonumber(os.getenv("SEED") or "1"))
end
request = function()
  local body = string.format('{"user_id": %d, "movie_id": %d, "rating": %.1f}',
    base + math.random(0, span - 1), math.random(1, max_movie), math.random(1, 10) / 2)
  return wrk.format("POST", "/ratings", {["Content-Type"] = "application/json"}, body)
end
