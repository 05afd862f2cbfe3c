-- wrk script: every request creates a product with a SKU not used before:
-- POST <URL's path> {"sku": "<PREFIX>-<thread>-<n>", ...}.
-- Usage: wrk ... -H "Authorization: Bearer <write token>" -s creates.lua URL -- PREFIX
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  prefix = args[1]
  n = 0
  wrk.headers["Content-Type"] = "application/json"
end
function request()
  n = n + 1
  local body = string.format(
    '{"sku":"%s-%d-%d","name":"Bench write","category":"bench","price":"9.99"}',
    prefix, tid, n)
  return wrk.format("POST", nil, nil, body)
end
