-- Replays a file of requests through wrk, for coupon-bench (bench/src/wrk.rs).
--
--   wrk -t<threads> ... -s replay.lua <url> -- <file> <threads> once|cycle
--
-- Each line of <file> is one request, tab-separated:
--   method, path, bearer token or '-', Idempotency-Key or '-', JSON body (may be empty)
-- Thread i of n sends lines i, i+n, i+2n, ... so no two threads send the same
-- line: each claim key and each coupon to redeem is used once. In "once" mode
-- a thread that runs out starts its lines again and counts every request
-- past the end as `exhausted` (the bench reports it: the file was too short
-- for the run); in "cycle" mode repeating is the point (validations).
--
-- Answers are counted by status, and for errors by the body's error code
-- ("409 already_redeemed"); a validation answering {"valid": false} counts as
-- "200 valid:false". done() prints one line for the bench to parse:
--   BENCH {"requests":..,"seconds":..,"p50_us":..,"p99_us":..,"p999_us":..,
--          "statuses":{..},"socket_errors":{..},"exhausted":..}

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local file, thread_count, mode = args[1], tonumber(args[2]), args[3]
   if file == nil or thread_count == nil or (mode ~= "once" and mode ~= "cycle") then
      error("usage: wrk ... -s replay.lua <url> -- <file> <threads> once|cycle")
   end
   cycle = mode == "cycle"
   requests = {}
   local n = 0
   for line in io.lines(file) do
      if n % thread_count == id then
         local method, path, token, key, body =
            line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         if method == nil then
            error(file .. ":" .. (n + 1) .. ": not 5 tab-separated fields")
         end
         local headers = {}
         if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
         if key ~= "-" then headers["Idempotency-Key"] = key end
         if body == "" then
            body = nil
         else
            headers["Content-Type"] = "application/json"
         end
         requests[#requests + 1] = wrk.format(method, path, headers, body)
      end
      n = n + 1
   end
   if #requests == 0 then
      error(file .. ": no lines for thread " .. id .. " of " .. thread_count)
   end
   next_request = 1
   wrapped = false
   exhausted = 0
   statuses = {}
end

function request()
   if next_request > #requests then
      next_request = 1
      wrapped = not cycle
   end
   if wrapped then exhausted = exhausted + 1 end
   local r = requests[next_request]
   next_request = next_request + 1
   return r
end

function response(status, headers, body)
   local label = tostring(status)
   if status >= 400 then
      local code = body and body:match('"code"%s*:%s*"([%w_]+)"')
      if code then label = label .. " " .. code end
   elseif body and body:find('"valid":false', 1, true) then
      label = label .. " valid:false"
   end
   statuses[label] = (statuses[label] or 0) + 1
end

local function json_counts(counts)
   local parts = {}
   for label, count in pairs(counts) do
      parts[#parts + 1] = string.format("%q:%d", label, count)
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local statuses, exhausted = {}, 0
   for _, thread in ipairs(threads) do
      for label, count in pairs(thread:get("statuses") or {}) do
         statuses[label] = (statuses[label] or 0) + count
      end
      exhausted = exhausted + (thread:get("exhausted") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"seconds":%.3f,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,'
         .. '"statuses":%s,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"exhausted":%d}\n',
      summary.requests, summary.duration / 1e6,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      json_counts(statuses), e.connect, e.read, e.write, e.timeout, exhausted))
end
