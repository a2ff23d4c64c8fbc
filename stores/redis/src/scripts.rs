//! The Lua scripts, one per operation, and how their replies decode.
//!
//! # Dedup records
//!
//! A record is a hash with fields `s` (state: `claimed`, `released`, `done`), `f` (fence), `a`
//! (attempts) and `l` (lease end, ms since the epoch by the server's clock). Each script reads
//! and writes it in one step, so concurrent replicas see the transitions of
//! `outrigger_policies::dedup` in some order. Fences are compared as strings: both sides are
//! canonical decimals, and Lua's doubles would lose exactness past 2^53. Every write resets the
//! key's expiry so fence and attempts survive between attempts; a live claim is kept at least
//! for its lease, as in `DedupRecord::expires_at_ms`.
//!
//! # Chains
//!
//! A chain's value is a plain string, and the group's set holds the chain's key while that value
//! holds parked messages. Swapping writes both in one script, so the parked count never
//! disagrees with the values. Values never expire: they hold messages until the chain empties.

use std::time::Duration;

use outrigger_core::{Claim, Completion, Release, StoreError};
use redis::Script;

/// The claim of one record `k` at `now` (ms), as a Lua function the single and the batched
/// script share. Replies `{0}` done, `{1, retry_in_ms}` busy, `{2, fence, attempt}` acquired,
/// `{3, generation}` dead-lettered.
macro_rules! claim_fn {
    () => {
        r"
local function claim(k, now, lease, ttl)
  local r = redis.call('HMGET', k, 's', 'l', 'g')
  if r[1] == 'done' then
    return {0}
  end
  if r[1] == 'dead' then
    return {3, tonumber(r[3]) or 0}
  end
  local lease_until = tonumber(r[2]) or 0
  if r[1] == 'claimed' and lease_until > now then
    return {1, lease_until - now}
  end
  local fence = redis.call('HINCRBY', k, 'f', 1)
  local attempts = redis.call('HINCRBY', k, 'a', 1)
  redis.call('HSET', k, 's', 'claimed', 'l', string.format('%d', now + lease))
  redis.call('PEXPIRE', k, math.max(ttl, lease))
  return {2, fence, attempts}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// KEYS[1] record; ARGV[1] lease ms, ARGV[2] ttl ms. Replies as `claim_fn`.
const CLAIM: &str = concat!(
    claim_fn!(),
    "return claim(KEYS[1], now, tonumber(ARGV[1]), tonumber(ARGV[2]))"
);

/// KEYS every record; ARGV[1] lease ms, ARGV[2] ttl ms. Replies one `claim_fn` reply per key,
/// in order: one round trip for many claims.
const CLAIM_MANY: &str = concat!(
    claim_fn!(),
    r"
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = claim(k, now, tonumber(ARGV[1]), tonumber(ARGV[2]))
end
return out
"
);

/// The completion of record `k` by `fence`, shared by the single and the batched script.
/// Replies `{0}` completed, `{1, current_fence}` fenced.
macro_rules! complete_fn {
    () => {
        r"
local function complete(k, fence, ttl)
  local r = redis.call('HMGET', k, 's', 'f')
  if r[2] == fence then
    if r[1] == 'claimed' then
      redis.call('HSET', k, 's', 'done')
      redis.call('PEXPIRE', k, ttl)
      return {0}
    elseif r[1] == 'done' then
      return {0}
    end
  end
  return {1, tonumber(r[2]) or 0}
end
"
    };
}

/// KEYS[1] record; ARGV[1] fence, ARGV[2] ttl ms. Replies as `complete_fn`.
const COMPLETE: &str = concat!(complete_fn!(), "return complete(KEYS[1], ARGV[1], ARGV[2])");

/// KEYS every record; ARGV[i] the fence of KEYS[i], then the ttl ms last. Replies one
/// `complete_fn` reply per key, in order.
const COMPLETE_MANY: &str = concat!(
    complete_fn!(),
    r"
local ttl = ARGV[#KEYS + 1]
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = complete(k, ARGV[i], ttl)
end
return out
"
);

/// KEYS[1] record; ARGV[1] fence, ARGV[2] generation, ARGV[3] ttl ms.
/// Replies `{0}` recorded, `{1, current_fence}` fenced.
const DEAD_LETTERED: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'f')
if r[2] == ARGV[1] then
  if r[1] == 'claimed' then
    redis.call('HSET', KEYS[1], 's', 'dead', 'a', 0, 'g', ARGV[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {0}
  elseif r[1] == 'dead' then
    return {0}
  end
end
return {1, tonumber(r[2]) or 0}
";

/// KEYS[1] record; ARGV[1] generation, ARGV[2] ttl ms. Replies 1 revived, 0 not dead-lettered
/// as an older generation.
const REVIVE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'g')
if r[1] ~= 'dead' or (tonumber(r[2]) or 0) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'released', 'a', 0)
redis.call('HDEL', KEYS[1], 'g')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] record; ARGV[1] fence, ARGV[2] `retry` | `refund` | `reset`, ARGV[3] ttl ms.
/// Replies 1 released, 0 superseded.
const RELEASE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'a')
if r[1] ~= 'claimed' or r[2] ~= ARGV[1] then
  return 0
end
local attempts = tonumber(r[3]) or 0
if ARGV[2] == 'refund' then
  attempts = math.max(attempts - 1, 0)
elseif ARGV[2] == 'reset' then
  attempts = 0
end
redis.call('HSET', KEYS[1], 's', 'released', 'a', attempts)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// KEYS[1] chain value, KEYS[2] the group's set of parked chains.
/// ARGV[1] `1` if the value must be ARGV[2], `0` if it must be absent (an empty value is a
/// value); ARGV[3] `1` to store ARGV[4], `0` to delete; ARGV[5] `1` if the stored value holds
/// parked messages (a deleted one holds none). Replies 1 swapped, 0 the value was not the
/// expected one.
const SWAP_CHAIN: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then
    return 0
  end
elseif current then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4])
  if ARGV[5] == '1' then
    redis.call('SADD', KEYS[2], KEYS[1])
    return 1
  end
else
  redis.call('DEL', KEYS[1])
end
redis.call('SREM', KEYS[2], KEYS[1])
return 1
";

/// KEYS[1] a key's next expected sequence. ARGV[1] the position to raise it to, ARGV[2] its TTL
/// in ms. Never lowers it. Replies the position stored afterwards, as the decimal string stored
/// (compared as Lua numbers: exact up to 2^53).
const ADVANCE_SEQUENCE: &str = r"
local raw = redis.call('GET', KEYS[1])
local current = raw and tonumber(raw)
if current and current >= tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return raw
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// The scripts, hashed once so calls go out as `EVALSHA`.
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) claim_many: Script,
    pub(crate) complete: Script,
    pub(crate) complete_many: Script,
    pub(crate) release: Script,
    pub(crate) dead_lettered: Script,
    pub(crate) revive: Script,
    pub(crate) swap_chain: Script,
    pub(crate) advance_sequence: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            claim: Script::new(CLAIM),
            claim_many: Script::new(CLAIM_MANY),
            complete: Script::new(COMPLETE),
            complete_many: Script::new(COMPLETE_MANY),
            release: Script::new(RELEASE),
            dead_lettered: Script::new(DEAD_LETTERED),
            revive: Script::new(REVIVE),
            swap_chain: Script::new(SWAP_CHAIN),
            advance_sequence: Script::new(ADVANCE_SEQUENCE),
        }
    }
}

/// The script argument for a release kind.
pub(crate) fn release_arg(how: Release) -> &'static str {
    match how {
        Release::Retry => "retry",
        Release::Refund => "refund",
        Release::Reset => "reset",
    }
}

pub(crate) fn decode_claim(reply: &[i64]) -> Result<Claim, StoreError> {
    match *reply {
        [0] => Ok(Claim::Done),
        [1, retry_in] => Ok(Claim::Busy {
            retry_in: Duration::from_millis(to_u64(retry_in, reply)?),
        }),
        [2, fence, attempt] => Ok(Claim::Acquired {
            fence: to_u64(fence, reply)?,
            attempt: u32::try_from(attempt).map_err(|_| unexpected("claim", reply))?,
        }),
        [3, generation] => Ok(Claim::DeadLettered {
            generation: u32::try_from(generation).map_err(|_| unexpected("claim", reply))?,
        }),
        _ => Err(unexpected("claim", reply)),
    }
}

pub(crate) fn decode_complete(reply: &[i64]) -> Result<Completion, StoreError> {
    match *reply {
        [0] => Ok(Completion::Completed),
        [1, current] => Ok(Completion::Fenced {
            current: to_u64(current, reply)?,
        }),
        _ => Err(unexpected("complete", reply)),
    }
}

pub(crate) fn decode_revive(reply: i64) -> Result<bool, StoreError> {
    decode_flag("revive", reply)
}

pub(crate) fn decode_release(reply: i64) -> Result<bool, StoreError> {
    decode_flag("release", reply)
}

pub(crate) fn decode_swap_chain(reply: i64) -> Result<bool, StoreError> {
    decode_flag("swap_chain", reply)
}

fn decode_flag(op: &str, reply: i64) -> Result<bool, StoreError> {
    match reply {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(unexpected(op, &[reply])),
    }
}

fn to_u64(value: i64, reply: &[i64]) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| unexpected("script", reply))
}

fn unexpected(op: &str, reply: &[i64]) -> StoreError {
    StoreError::Protocol(format!("{op} script replied {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode() {
        assert_eq!(decode_claim(&[0]), Ok(Claim::Done));
        assert_eq!(
            decode_claim(&[1, 250]),
            Ok(Claim::Busy {
                retry_in: Duration::from_millis(250)
            })
        );
        assert_eq!(
            decode_claim(&[2, 7, 3]),
            Ok(Claim::Acquired {
                fence: 7,
                attempt: 3
            })
        );
        assert_eq!(
            decode_claim(&[3, 2]),
            Ok(Claim::DeadLettered { generation: 2 })
        );
        assert_eq!(
            decode_complete(&[1, 4]),
            Ok(Completion::Fenced { current: 4 })
        );
        assert_eq!(decode_release(1), Ok(true));
        assert_eq!(decode_swap_chain(0), Ok(false));
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        assert!(matches!(
            decode_claim(&[2, -1, 1]),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(decode_claim(&[]), Err(StoreError::Protocol(_))));
        assert!(matches!(
            decode_complete(&[3]),
            Err(StoreError::Protocol(_))
        ));
        assert!(matches!(decode_release(2), Err(StoreError::Protocol(_))));
        assert!(matches!(
            decode_swap_chain(-1),
            Err(StoreError::Protocol(_))
        ));
    }
}
