#!lua
-- KEYS[1]: a key with an expiry. A write that changes nothing (the key's expiry set to what it is): a `WAIT` after
-- it, on the same connection, covers every write its master had taken before it (a replica applies the master's
-- writes in order). Sent after a read of a session's log (src/backend/redis/log.rs, `read_after` with
-- `redis_wait_replicas`), so no event a client is shown from the log can be taken back by a failover; and after a
-- new session's writes (`Shared::fence_key`), so no client is told of a session a failover takes back. Returns
-- the key's PTTL: -2 when this master does not hold it. The `#!lua` line (no `no-writes` flag) makes a replica
-- refuse it, so a demoted master never answers.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return ttl
