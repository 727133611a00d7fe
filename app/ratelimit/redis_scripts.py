"""The Lua scripts of `app.ratelimit.redis`, each one atomic round trip on the server's clock.

    ACQUIRE   admit one request (rpm and concurrency together), idempotent per member
    RENEW     the heartbeat: push this process's leases' expiry forward
    MERGE     after an outage: add what was admitted locally, at its real age

Times are milliseconds from Redis `TIME`, so replicas with skewed clocks agree.
"""

from __future__ import annotations

# KEYS: rpm set, concurrency set. ARGV: member id, rpm, max concurrency (0 = no such limit),
# window ms, lease ttl ms. Returns {0, 0} admitted, {1, retry ms} over rpm, {2, 0} over
# concurrency. A member already present was admitted by an earlier run of this same call
# (whose reply was lost): it is admitted again without counting twice.
# Numbers passed to redis.call are formatted by Redis with full precision.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local rpm = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
if (conc > 0 and redis.call('ZSCORE', KEYS[2], id))
   or (conc == 0 and rpm > 0 and redis.call('ZSCORE', KEYS[1], id)) then
  return {0, 0}
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  local used = redis.call('ZCARD', KEYS[1])
  if used >= rpm then
    local edge = redis.call('ZRANGE', KEYS[1], used - rpm, used - rpm, 'WITHSCORES')
    return {1, tonumber(edge[2]) + window - now}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then
    return {2, 0}
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {0, 0}
"""

# The heartbeat. KEYS: a concurrency set. ARGV: lease ttl ms, then the members this process
# holds in it. Only members still present are renewed (XX): a lease that already expired
# stays expired. Returns how many were renewed.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[i])
end
if renewed > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return renewed
"""

# Merging local decisions back. KEYS: rpm set, concurrency set. ARGV: window ms, lease ttl ms,
# the number of rpm entries R, then R pairs (member, age ms), then the in-flight lease members.
# Entries are scored at their real age (`now - age`), so they leave the window when they would
# have; re-running the merge (a lost reply) rewrites the same members.
MERGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local r = tonumber(ARGV[3])
for i = 0, r - 1 do
  local age = tonumber(ARGV[5 + 2 * i])
  if age < window then
    redis.call('ZADD', KEYS[1], now - age, ARGV[4 + 2 * i])
  end
end
if r > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
local leases = 0
for i = 4 + 2 * r, #ARGV do
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
  leases = leases + 1
end
if leases > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 0
"""
