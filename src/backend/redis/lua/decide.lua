-- KEYS: confirm hash, decided hash, last hash, lease. ARGV: call id ('' = the pending one), approved (1/0), ttl s,
-- the hold ms a claimed park's lease is cut to.
-- First decision wins: the parked record is removed by the winner; repeats read the decided hash.
-- Returns {'claimed', json, call} | {'already', call, flag..request_id} | {'none'}.
__CUT_HOLD__
if ARGV[1] ~= '' then
  local prev = redis.call('HGET', KEYS[2], ARGV[1])
  if prev then return {'already', ARGV[1], prev} end
end
local call = redis.call('HGET', KEYS[1], 'call')
if not call then return {'none'} end
-- Only an approval is decided here; an interaction or OTP park waits for its own answer.
local gate = redis.call('HGET', KEYS[1], 'gate')
if gate and gate ~= 'confirm' then return {'none'} end
if ARGV[1] ~= '' and ARGV[1] ~= call then return {'none'} end
local json = redis.call('HGET', KEYS[1], 'json') or ''
local req = redis.call('HGET', KEYS[1], 'req') or ''
redis.call('DEL', KEYS[1])
local decision = ARGV[2] .. req
redis.call('HSET', KEYS[2], call, decision)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'call', call, 'decision', decision)
redis.call('EXPIRE', KEYS[3], ARGV[3])
cut_hold(KEYS[4], ARGV[4])
return {'claimed', json, call}
