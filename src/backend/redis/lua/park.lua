-- KEYS: confirm hash. ARGV: parked JSON, call id, request id, ttl ms, gate (confirm|interaction|otp). Replaces
-- any previous parked turn.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'call', ARGV[2], 'req', ARGV[3], 'gate', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
