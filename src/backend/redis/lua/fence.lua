#!lua
-- KEYS[1]: a session's log. A write that changes nothing (the key's expiry set to what it is), sent after a read
-- on the same connection (src/backend/redis/log.rs, `read_after` with `redis_wait_replicas`): a `WAIT` after it
-- covers every write the read saw (a replica applies the master's writes in order), so no event a client is shown
-- from the log can be taken back by a failover. The `#!lua` line (no `no-writes` flag) makes a replica refuse it,
-- so a demoted master never serves such a read.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return ttl
