"""The key store's Lua scripts: each request touches Redis through one atomic script call.

Layout, per user, one hash `<prefix>u:<user_id>`:
  `v:<n>`    the wrapped key of version n (see wrapping.py)
  `cur`      the current version (present only while `v:<cur>` is)
  `floor`    the highest version ever destroyed: no version at or below it is ever issued again
  `shredded` present while the user is shredded (no key is handed out or created)
  `d:<n>`    when version n was destroyed (RFC 3339, the shred's time); kept for good
and one hash `<prefix>meta` with the master key's id and check value (`mk_id`, `mk_check`) and, during a
master-key rewrap, the new key's (`rewrap_to`, `rewrap_check`).

Replies are arrays whose first element is a status, a bare number in Lua and a `Reply` in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from redis.exceptions import RedisError, ResponseError

from keyservice.wire.errors import KeyServiceUnavailable


async def run(script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a registered script; what Redis says goes wrong becomes one `KeyServiceUnavailable`.

    The scripts refuse with `PSRETIRED` while the store is re-wrapped or wrapped under another master key.

    Raises:
        KeyServiceUnavailable: Redis does not answer, or the script refused.
    """
    try:
        return await script(keys=keys, args=args)
    except ResponseError as exc:
        if str(exc).startswith("PSRETIRED"):
            raise KeyServiceUnavailable(
                "the key store is being re-wrapped or uses another master key; restart with the current one"
            ) from None
        raise KeyServiceUnavailable("key store error") from None
    except RedisError:
        raise KeyServiceUnavailable("key store unavailable") from None


class Reply(IntEnum):
    """The status that starts a script's reply (the scripts below return the bare numbers)."""

    MISS = 0
    """No such key: none yet (READ_CURRENT), taken meanwhile (CREATE, NEXT_VERSION: retry at the version
    given), or a version never issued (READ_VERSIONS)."""
    FOUND = 1
    SHREDDED = 2
    """The user is shredded (READ_CURRENT, CREATE, NEXT_VERSION), or the version destroyed (READ_VERSIONS)."""
    STORED = 3
    NOT_SHREDDED = 4
    """A reinstate of a user who is not shredded (NEXT_VERSION)."""


# Current keys of many users: {1, version, wrapped} | {2} | {0, floor}.
READ_CURRENT = """
local out = {}
for i = 1, #KEYS do
  local s = redis.call('HMGET', KEYS[i], 'cur', 'shredded', 'floor')
  if s[2] then
    out[i] = {2}
  elseif s[1] then
    out[i] = {1, tonumber(s[1]), redis.call('HGET', KEYS[i], 'v:' .. s[1])}
  else
    out[i] = {0, tonumber(s[3] or '0')}
  end
end
return out
"""

# Create-once: KEYS[1] meta, KEYS[2..] users; ARGV[1] master-key id, then (version, wrapped) per user.
# A user that got a key meanwhile gets it back ({1, ...}); only a user with no current key and the
# expected next version gets ours ({3, version}); otherwise {0, floor} asks the caller to retry.
CREATE = """
local m = redis.call('HMGET', KEYS[1], 'mk_id', 'rewrap_to')
if m[1] ~= ARGV[1] or m[2] then
  return redis.error_reply('PSRETIRED master key retired or rewrap in progress')
end
local out = {}
for i = 2, #KEYS do
  local k = KEYS[i]
  local v = ARGV[2 * i - 2]
  local s = redis.call('HMGET', k, 'cur', 'shredded', 'floor')
  if s[2] then
    out[i - 1] = {2}
  elseif s[1] then
    out[i - 1] = {1, tonumber(s[1]), redis.call('HGET', k, 'v:' .. s[1])}
  elseif tonumber(s[3] or '0') + 1 == tonumber(v) then
    redis.call('HSET', k, 'cur', v, 'v:' .. v, ARGV[2 * i - 1])
    out[i - 1] = {3, tonumber(v)}
  else
    out[i - 1] = {0, tonumber(s[3] or '0')}
  end
end
return out
"""

# Rotate or reinstate one user: KEYS[1] meta, KEYS[2] user; ARGV mk_id, mode, version, wrapped.
# {3, version} stored | {2} shredded (rotate) | {4} not shredded (reinstate) | {0, version} retry at it.
NEXT_VERSION = """
local m = redis.call('HMGET', KEYS[1], 'mk_id', 'rewrap_to')
if m[1] ~= ARGV[1] or m[2] then
  return redis.error_reply('PSRETIRED master key retired or rewrap in progress')
end
local s = redis.call('HMGET', KEYS[2], 'cur', 'shredded', 'floor')
if ARGV[2] == 'rotate' and s[2] then return {2} end
if ARGV[2] == 'reinstate' and not s[2] then return {4} end
local want = math.max(tonumber(s[1] or '0'), tonumber(s[3] or '0')) + 1
if want ~= tonumber(ARGV[3]) then return {0, want} end
redis.call('HSET', KEYS[2], 'cur', ARGV[3], 'v:' .. ARGV[3], ARGV[4])
redis.call('HDEL', KEYS[2], 'shredded')
return {3, want}
"""

# Crypto-shred one user: delete every version, remember the highest and when each was destroyed (ARGV[1],
# RFC 3339), mark shredded. {highest version ever destroyed, {versions destroyed now}}.
SHRED = """
local h = redis.call('HGETALL', KEYS[1])
local top = 0
local destroyed = {}
for i = 1, #h, 2 do
  local f = h[i]
  if string.sub(f, 1, 2) == 'v:' then
    local n = tonumber(string.sub(f, 3))
    destroyed[#destroyed + 1] = n
    redis.call('HDEL', KEYS[1], f)
    redis.call('HSET', KEYS[1], 'd:' .. n, ARGV[1])
    if n > top then top = n end
  elseif f == 'cur' or f == 'floor' then
    local n = tonumber(h[i + 1])
    if n > top then top = n end
  end
end
redis.call('HDEL', KEYS[1], 'cur')
redis.call('HSET', KEYS[1], 'shredded', '1', 'floor', top)
return {top, destroyed}
"""

# Given versions of given users (KEYS may repeat; ARGV[i] is the version for KEYS[i]):
# {1, wrapped} | {2, destroyed at or nil} destroyed | {0} unknown.
READ_VERSIONS = """
local out = {}
for i = 1, #KEYS do
  local w = redis.call('HGET', KEYS[i], 'v:' .. ARGV[i])
  if w then
    out[i] = {1, w}
  else
    local f = redis.call('HGET', KEYS[i], 'floor')
    if f and tonumber(ARGV[i]) <= tonumber(f) then
      -- false (no date: destroyed before dates were kept, or again by a ledger re-apply) becomes nil.
      out[i] = {2, redis.call('HGET', KEYS[i], 'd:' .. ARGV[i])}
    else
      out[i] = {0}
    end
  end
end
return out
"""

# Re-apply the shred ledger: ARGV per user (max destroyed, shredded 1/0, reinstated version).
# Returns {versions destroyed again, users shredded again}.
REAPPLY = """
local destroyed_again = 0
local reshredded = 0
for i = 1, #KEYS do
  local k = KEYS[i]
  local floor = tonumber(ARGV[3 * i - 2])
  local shred = ARGV[3 * i - 1] == '1'
  local reinstated = tonumber(ARGV[3 * i])
  local h = redis.call('HGETALL', k)
  local cur = nil
  local was_shredded = false
  local versions = {}
  for j = 1, #h, 2 do
    local f = h[j]
    if f == 'floor' then floor = math.max(floor, tonumber(h[j + 1]))
    elseif f == 'cur' then cur = tonumber(h[j + 1])
    elseif f == 'shredded' then was_shredded = true
    elseif string.sub(f, 1, 2) == 'v:' then versions[#versions + 1] = tonumber(string.sub(f, 3))
    end
  end
  local top = floor
  for _, n in ipairs(versions) do
    if shred or n <= floor then
      redis.call('HDEL', k, 'v:' .. n)
      destroyed_again = destroyed_again + 1
      if n > top then top = n end
    end
  end
  if shred then
    if cur and cur > top then top = cur end
    if not was_shredded then reshredded = reshredded + 1 end
    redis.call('HDEL', k, 'cur')
    redis.call('HSET', k, 'shredded', '1', 'floor', top)
  else
    if was_shredded then redis.call('HDEL', k, 'shredded') end
    if (not cur or cur < reinstated) and reinstated > top then top = reinstated end
    if cur and cur <= top then redis.call('HDEL', k, 'cur', 'v:' .. cur) end
    redis.call('HSET', k, 'floor', top)
  end
end
return {destroyed_again, reshredded}
"""

# Rewrap compare-and-set: ARGV per user (field, old wrapped, new wrapped); returns how many were set.
REWRAP_CAS = """
local n = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], ARGV[3 * i - 2]) == ARGV[3 * i - 1] then
    redis.call('HSET', KEYS[i], ARGV[3 * i - 2], ARGV[3 * i])
    n = n + 1
  end
end
return n
"""

# First start claims the store for a master key; later starts read what is stored.
# {mk_id, mk_check, rewrap_to or '', rewrap_check or ''}.
CLAIM_META = """
local m = redis.call('HMGET', KEYS[1], 'mk_id', 'mk_check', 'rewrap_to', 'rewrap_check')
if not m[1] then
  redis.call('HSET', KEYS[1], 'mk_id', ARGV[1], 'mk_check', ARGV[2])
  return {ARGV[1], ARGV[2], '', ''}
end
return {m[1], m[2] or '', m[3] or '', m[4] or ''}
"""
