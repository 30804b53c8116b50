#!lua
-- KEYS[1]: a key with an expiry. A write that changes nothing (the key's expiry set to what it is): a `WAIT` after
-- it, on the same connection, covers every write its master had taken before it (a replica applies the master's
-- writes in order). Sent by `Shared::fence_key` (src/backend/redis/durability.rs) after a read of a session's log
-- and after a new session's writes. Returns the key's PTTL: -2 when this master does not hold it. The `#!lua`
-- line (no `no-writes` flag) makes a replica refuse it, so a demoted master never answers.
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return ttl
