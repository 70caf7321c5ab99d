-- wrk script: rotate over the request paths listed in a file (one per line).
-- Usage: wrk ... -s bench/rotate.lua URL -- PATHS_FILE [cold]
-- With "cold", every request gets a unique v= so each one is a distinct render.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  cold = args[2] == "cold"
  counter = (id or 0) * 100000000 + os.time() % 100000
end

function request()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  if cold then
    local sep = string.find(path, "?", 1, true) and "&" or "?"
    path = path .. sep .. "v=" .. counter
  end
  return wrk.format("GET", path)
end
