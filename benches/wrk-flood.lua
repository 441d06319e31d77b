-- wrk script: a flood of requests for ids that do not exist, over the catalog's GET endpoints
-- keyed by an id (product, styles, related, reviews, meta, questions, answers), as a client
-- probing at random would send. Each is a new cache key (a 404 or an empty list), so
-- this measures what the cache's memory budget holds against entries that are all overhead.
--
--   wrk -t2 -c64 -d60s -s benches/wrk-flood.lua http://127.0.0.1:3000

local paths = {
  "/products/%d",
  "/products/%d/styles",
  "/products/%d/related",
  "/reviews?product_id=%d",
  "/reviews/meta?product_id=%d",
  "/qa/questions?product_id=%d",
  "/qa/questions/%d/answers",
}
local i = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  i = i + 1
  -- Ids far past any catalog's, each random: almost every request is a new key.
  local id = math.random(1000000000, 2000000000) * 1000 + math.random(0, 999)
  return wrk.format("GET", string.format(paths[(i % #paths) + 1], id))
end
