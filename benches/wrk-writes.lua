-- wrk script: the product-page mix of wrk-mix.lua with 5% writes — helpful votes on reviews,
-- new reviews and new answers — over products in [FIRST, FIRST + COUNT). Run wrk from the
-- repository root (it loads benches/wrk-mix.lua).
--
--   FIRST=900000 COUNT=100000 wrk -t2 -c64 -d20s -s benches/wrk-writes.lua http://127.0.0.1:3000

dofile("benches/wrk-mix.lua")

local json = { ["Authorization"] = "bench", ["Content-Type"] = "application/json" }

request = function()
  local id = random_product()
  local roll = math.random(1, 100)
  if roll <= 3 then
    -- Review ids run about 5.8 per product in the data set.
    return wrk.format("PUT", string.format("/reviews/%d/helpful", math.floor(id * 5.7)), { ["Authorization"] = "bench" })
  elseif roll == 4 then
    local body = string.format('{"product_id":%d,"rating":4,"summary":"bench","body":"A review written by the load benchmark.","recommend":true,"name":"bench","email":"bench@example.com","characteristics":{}}', id)
    return wrk.format("POST", "/reviews", json, body)
  elseif roll == 5 then
    local body = '{"body":"An answer written by the load benchmark.","name":"bench","email":"bench@example.com","photos":[]}'
    return wrk.format("POST", string.format("/qa/questions/%d/answers", math.floor(id * 3.5)), json, body)
  end
  return page_view(id)
end
