-- wrk script: the product-page mix of wrk-mix.lua with 5% writes — helpful votes on reviews,
-- new reviews and new answers — over products in [FIRST, FIRST + COUNT).
--
--   FIRST=900000 COUNT=100000 wrk -t2 -c64 -d20s -s benches/wrk-writes.lua http://127.0.0.1:3000

local first = tonumber(os.getenv("FIRST") or "1")
local count = tonumber(os.getenv("COUNT") or "1000")
local paths = {
  "/products/%d",
  "/products/%d/styles",
  "/products/%d/related",
  "/reviews?product_id=%d&count=5&sort=relevant",
  "/reviews/meta?product_id=%d",
  "/qa/questions?product_id=%d&count=5",
}
local i = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  i = i + 1
  local id = first + math.random(0, count - 1)
  local roll = math.random(1, 100)
  if roll <= 3 then
    -- Review ids run about 5.8 per product in the data set.
    return wrk.format("PUT", string.format("/reviews/%d/helpful", math.floor(id * 5.7)), { ["Authorization"] = "bench" })
  elseif roll == 4 then
    local body = string.format('{"product_id":%d,"rating":4,"summary":"bench","body":"A review written by the load benchmark.","recommend":true,"name":"bench","email":"bench@example.com","characteristics":{}}', id)
    return wrk.format("POST", "/reviews", { ["Authorization"] = "bench", ["Content-Type"] = "application/json" }, body)
  elseif roll == 5 then
    local body = '{"body":"An answer written by the load benchmark.","name":"bench","email":"bench@example.com","photos":[]}'
    return wrk.format("POST", string.format("/qa/questions/%d/answers", math.floor(id * 3.5)), { ["Authorization"] = "bench", ["Content-Type"] = "application/json" }, body)
  end
  return wrk.format("GET", string.format(paths[(i % #paths) + 1], id), { ["Authorization"] = "bench" })
end
