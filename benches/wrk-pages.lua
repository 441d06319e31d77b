-- wrk script: pages of long review lists other than the product page's own (page 2 to 20 of
-- 5, either sort), over the products listed one id a line in the file PRODUCTS; what a client
-- paging through a product's reviews asks for. The product page's lead page is kept ready to
-- send; these pages are cut from the packed list.
--
--   psql "$DATABASE_URL" -Atc "SELECT product_id FROM reviews WHERE NOT reported
--                              GROUP BY 1 HAVING count(*) >= 1000" > /tmp/long.txt
--   PRODUCTS=/tmp/long.txt wrk -t2 -c64 -d10s -s benches/wrk-pages.lua http://127.0.0.1:3000

local products = {}
for line in io.lines(os.getenv("PRODUCTS") or error("set PRODUCTS to a file of product ids")) do
  products[#products + 1] = tonumber(line)
end
local sorts = { "relevant", "newest" }
local headers = { ["Authorization"] = "bench" }

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

request = function()
  local id = products[math.random(1, #products)]
  local path = string.format("/reviews?product_id=%d&sort=%s&page=%d&count=5",
    id, sorts[math.random(1, 2)], math.random(2, 20))
  return wrk.format("GET", path, headers)
end
