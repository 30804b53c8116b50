-- KEYS: lease, turn record. ARGV: the turn the index entry names (empty for entries of the older form, which name
-- only the session). Run by the caller that moved the deadline-index entry forward (its claim for
-- LAPSED_RETRY_MS). Returns {'gone'} when there is no record (or an ending's tombstone); {'other', pttl, turn
-- id} when the record is another turn's whose lease runs; {'alive', pttl} when the entry's turn's lease still
-- runs; {'claimed', json} when the record's turn lapsed: the record stays until the caller's `lapsed`-guarded
-- append (or takeover) ends it, so a caller that dies or fails meanwhile leaves it to be claimed again. A record of another turn with no
-- lease is claimed too: a failover can lose a takeover's writes yet keep the index entry written after them,
-- and this entry is then the only pointer left to the lapsed turn.
local rec = redis.call('GET', KEYS[2])
-- No record, or the tombstone an ending leaves (lua/append_batch.lua): the turn ended.
if not rec or cjson.decode(rec)['ended'] then return {'gone'} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {'claimed', rec} end
local current = cjson.decode(rec)['turn_id']
if ARGV[1] == '' or current == ARGV[1] then return {'alive', ttl} end
-- Another turn's record whose lease runs (a takeover, or a newer turn): this entry is stale, but that turn may
-- have no entry of its own (a takeover whose pod never heard it had taken the turn, its reply lost with a
-- connection, never indexed it): {'other', its lease's pttl, its turn id}, for the caller to make sure it has.
return {'other', ttl, current}
