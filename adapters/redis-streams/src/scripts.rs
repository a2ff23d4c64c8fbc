//! The Lua scripts that make a step of two commands one atomic step on the server: a dead
//! letter and the acknowledgement of its entry, a retry copy and the acknowledgement of its
//! entry, a resubmitted copy and the removal of its dead letter, the refresh of entries only
//! while they are still this consumer's. A client that dies halfway leaves both commands done
//! or neither.
//!
//! Redis runs a script to its end, but does not undo the writes before a failing command: each
//! script checks first and writes last, its one fallible write (`XADD`) before the rest.

use redis::Script;

/// Writes a dead letter (or a tombstone) and acknowledges its entry.
///
/// `KEYS[1]` the dead-letter stream, `KEYS[2]` the source stream. `ARGV[1]` the group,
/// `ARGV[2]` the entry id, `ARGV[3]` `ack` (write only while the entry is pending, then
/// `XACK` it) or `add` (write only: the entry left the pending list already), `ARGV[4]` `1`
/// to create a missing dead-letter stream, `ARGV[5..]` the dead letter's fields and values.
///
/// Returns the dead letter's id, or nil when the entry is still in the stream but no longer
/// pending: it was settled already (a retry after a lost reply), so nothing is written twice.
/// An entry deleted from the stream while it was delivered may have left the pending list
/// with it (a claim removes such entries): its dead letter is written all the same.
const DEAD_LETTER: &str = r"
if ARGV[3] == 'ack' then
  local pending = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
  if #pending == 0 and #redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2]) > 0 then
    return false
  end
end
local args = {'XADD', KEYS[1]}
if ARGV[4] ~= '1' then table.insert(args, 'NOMKSTREAM') end
table.insert(args, '*')
for i = 5, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call(unpack(args))
if not id then
  return redis.error_reply('NOSTREAM the dead-letter stream ' .. KEYS[1] .. ' does not exist')
end
if ARGV[3] == 'ack' then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) end
return id
";

/// Writes a retry copy (retry mode `queue`) and acknowledges its entry.
///
/// `KEYS[1]` the retry stream, `KEYS[2]` the stream of the entry. `ARGV[1]` the group,
/// `ARGV[2]` the entry id, `ARGV[3..]` the copy's fields and values.
///
/// Writes only while the entry is pending, then `XACK`s it; returns the copy's id, or nil when
/// the entry is no longer pending: it was settled already (a retry after a lost reply), so no
/// copy is written twice. A failing `XADD` (a key of another type) ends the script before the
/// `XACK`: the entry stays pending, nothing written.
const RETRY: &str = r"
if #redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  return false
end
local args = {'XADD', KEYS[1], '*'}
for i = 3, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call(unpack(args))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
return id
";

/// Claims entries again for the consumer that holds them, and never one another consumer
/// holds: resets their idle time (`JUSTID`: the delivery count stays) and, when asked, sets
/// their delivery count.
///
/// `KEYS[1]` the stream. `ARGV[1]` the group, `ARGV[2]` the consumer, `ARGV[3]` the delivery
/// count to set, or `-1` to leave it, `ARGV[4..]` entry ids.
///
/// Returns the ids it claimed: those still pending on the consumer and still in the stream.
const CLAIM_OWN: &str = r"
local own = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then table.insert(own, ARGV[i]) end
end
if #own == 0 then return own end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for _, id in ipairs(own) do table.insert(args, id) end
if tonumber(ARGV[3]) >= 0 then
  table.insert(args, 'RETRYCOUNT')
  table.insert(args, ARGV[3])
end
table.insert(args, 'JUSTID')
return redis.call(unpack(args))
";

/// Adds a resubmitted copy to its target stream and deletes its dead letter.
///
/// `KEYS[1]` the dead-letter stream, `KEYS[2]` the target stream. `ARGV[1]` the dead letter's
/// id, `ARGV[2..]` the copy's fields and values.
///
/// Returns the copy's id, or nil when the dead letter is gone (resubmitted or purged already):
/// a rerun never adds a second copy. Refuses a target that is not an existing stream.
const RESUBMIT: &str = r"
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'stream' then
  return redis.error_reply('NOSTREAM the target ' .. KEYS[2] .. ' is not a stream (' .. kind .. ')')
end
local args = {'XADD', KEYS[2], '*'}
for i = 2, #ARGV do table.insert(args, ARGV[i]) end
local id = redis.call(unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
";

/// Creates an empty stream where no key is: an entry trimmed away as it is added.
///
/// `KEYS[1]` the stream. Returns 1 when it created it, 0 when the key existed.
const CREATE_EMPTY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '0', '*', 'outrigger', 'created')
return 1
";

/// The scripts, hashed once; `invoke_async` loads each on first use.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// See [`DEAD_LETTER`].
    pub dead_letter: Script,
    /// See [`RETRY`].
    pub retry: Script,
    /// See [`CLAIM_OWN`].
    pub claim_own: Script,
    /// See [`RESUBMIT`].
    pub resubmit: Script,
    /// See [`CREATE_EMPTY`].
    pub create_empty: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            dead_letter: Script::new(DEAD_LETTER),
            retry: Script::new(RETRY),
            claim_own: Script::new(CLAIM_OWN),
            resubmit: Script::new(RESUBMIT),
            create_empty: Script::new(CREATE_EMPTY),
        }
    }
}
