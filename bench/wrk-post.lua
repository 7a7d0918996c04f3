-- wrk script: POST a 256-byte body, as bench/publish's single publishes do.
--   wrk -t1 -c64 -d10s -s bench/wrk-post.lua 'http://127.0.0.1:8470/v1/topics/bench?ack=spool'
-- BODY_BYTES in the environment changes the size. wrk prints
-- "Non-2xx or 3xx responses: N" when some failed.
local n = tonumber(os.getenv("BODY_BYTES") or "256")
local letters = "abcdefghijklmnopqrstuvwxyz"

wrk.method = "POST"
wrk.body = string.rep(letters, math.floor(n / #letters) + 1):sub(1, n)
