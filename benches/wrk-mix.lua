-- wrk script: the storefront's product-page mix over a range of product ids.
-- A product page load asks for the product, its styles, related ids, reviews, review meta and
-- questions; this cycles through those for random products in [FIRST, FIRST + COUNT).
-- benches/wrk-writes.lua builds on it (run wrk from the repository root).
--
--   FIRST=900000 COUNT=1000 wrk -t2 -c64 -d20s -s benches/wrk-mix.lua http://127.0.0.1:3000
--   ACCEPT_ENCODING=gzip FIRST=1 COUNT=1000000 wrk ... (the same, as a browser asks)

first = tonumber(os.getenv("FIRST") or "1")
count = tonumber(os.getenv("COUNT") or "1000")
-- ACCEPT_ENCODING=gzip asks for compressed bodies, as every browser does; unset, bodies come
-- plain (the server inflates what it keeps compressed).
local headers = { ["Authorization"] = "bench" }
if os.getenv("ACCEPT_ENCODING") then
  headers["Accept-Encoding"] = os.getenv("ACCEPT_ENCODING")
end
local paths = {
  "/products/%d",
  "/products/%d/styles",
  "/products/%d/related",
  "/reviews?product_id=%d&count=5&sort=relevant",
  "/reviews/meta?product_id=%d",
  "/qa/questions?product_id=%d&count=5",
}
local i = 0
-- ONLY=N (1 to 6) asks for one endpoint of the mix, on every request.
local only = tonumber(os.getenv("ONLY") or "0")

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

-- A random product of the range.
function random_product()
  return first + math.random(0, count - 1)
end

-- The next request of a product page of product `id`.
function page_view(id)
  i = i + 1
  local path = paths[(i % #paths) + 1]
  if only > 0 then
    path = paths[only]
  end
  return wrk.format("GET", string.format(path, id), headers)
end

request = function()
  return page_view(random_product())
end
