-- wrk script: every request reads a product id not read before in this run (a Redis
-- miss in the app): GET /api/v1/products/<base + n>, ids striped over wrk's threads.
-- Usage: wrk ... -s fresh_ids.lua URL -- BASE THREADS
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  base = tonumber(args[1])
  stride = tonumber(args[2])
  n = 0
end
function request()
  n = n + 1
  return wrk.format(nil, "/api/v1/products/" .. (base + tid + n * stride))
end
