"""The Redis rate-limit store: every sidecar replica shares one set of sliding logs.

One Lua script checks and takes all of a request's buckets atomically (Redis runs a script without
interleaving), using Redis's clock so replicas never disagree about time. Per bucket: a sorted set
of request ids scored by expiry, a hash of their weights, and a running total.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from proxy_plugins.sidecar.ratelimit import LEASE_MS, Bucket, Denial, Finished, Usage, Verdict

__all__ = ["RedisStore"]

log = logging.getLogger("nx.ratelimit")

# KEYS: per bucket 3 keys (zset, weights hash, total). ARGV: request id, then per bucket
# (limit, weight, ttl_ms). Returns {denied_index (0 = none), retry_ms, remaining..., reset...}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid = ARGV[1]
local n = #KEYS / 3
local totals = {}
local function expire(z, w, s)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #old > 0 then
    local ws = redis.call('HMGET', w, unpack(old))
    local sum = 0
    for _, v in ipairs(ws) do sum = sum + (tonumber(v) or 0) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
    redis.call('HDEL', w, unpack(old))
    return redis.call('DECRBY', s, sum)
  end
  return tonumber(redis.call('GET', s) or '0')
end
local denied, retry = 0, 0
for i = 1, n do
  local z, w, s = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local limit, weight = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  totals[i] = expire(z, w, s)
  if denied == 0 and totals[i] + weight > limit then
    denied = i
    if weight > limit then
      retry = 60000
    else
      local need, freed = totals[i] + weight - limit, 0
      local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      for j = 1, #entries, 2 do
        freed = freed + (tonumber(redis.call('HGET', w, entries[j])) or 0)
        if freed >= need then retry = tonumber(entries[j+1]) - now break end
      end
      if retry < 1 then retry = 1 end
    end
  end
end
local out = {denied, retry}
for i = 1, n do
  local z, w, s = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local limit, weight, ttl = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if denied == 0 then
    redis.call('ZADD', z, now + ttl, rid)
    redis.call('HSET', w, rid, weight)
    totals[i] = redis.call('INCRBY', s, weight)
    for _, k in ipairs({z, w, s}) do redis.call('PEXPIRE', k, ttl + 1000) end
  end
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  local reset = 0
  if #first > 0 then reset = tonumber(first[2]) - now end
  out[#out+1] = math.max(0, limit - totals[i])
  out[#out+1] = math.max(0, reset)
end
return out
"""

# KEYS: zset, weights, total of one bucket. ARGV: request id, new weight (-1 = remove).
_ADJUST = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
local new = tonumber(ARGV[2])
if new < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DECRBY', KEYS[3], tonumber(old))
else
  redis.call('HSET', KEYS[2], ARGV[1], new)
  redis.call('INCRBY', KEYS[3], new - tonumber(old))
end
return 1
"""


# KEYS: zset, weights, total of one concurrency bucket. ARGV: request id, lease ms. Only a slot
# still present is extended: a renewal never takes back a slot that was released.
_RENEW = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl + 1000) end
return 1
"""


def _keys(b: Bucket) -> list[str]:
    # One hash tag per bucket keeps its three keys on one Redis Cluster slot.
    return [f"{{{b.key}}}:z", f"{{{b.key}}}:w", f"{{{b.key}}}:s"]


class RedisStore:
    """If Redis is unreachable, rate limits fail OPEN (logged and counted); money never does."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._adjust = self.client.register_script(_ADJUST)
        self._renew = self.client.register_script(_RENEW)
        self.failures = 0

    async def acquire(self, request_id: str, buckets: list[Bucket]) -> Verdict:
        if not buckets:
            return Verdict(denial=None, usage=[])
        keys = [k for b in buckets for k in _keys(b)]
        args: list[str | int] = [request_id]
        for b in buckets:
            args += [b.limit, b.weight, b.ttl_ms]
        try:
            out = [int(x) for x in await self._acquire(keys=keys, args=args)]
        except (RedisError, OSError) as exc:
            self.failures += 1
            log.warning("rate-limit store unreachable, admitting without limits: %s", exc)
            return Verdict(denial=None, usage=[])
        denied, retry = out[0], out[1]
        usage = [Usage(b, out[2 + 2 * i], out[3 + 2 * i]) for i, b in enumerate(buckets)]
        return Verdict(denial=Denial(buckets[denied - 1], retry) if denied else None, usage=usage)

    async def release(self, request_id: str, buckets: list[Bucket]) -> None:
        for b in buckets:
            if b.kind == "concurrent":
                await self._call_adjust(b, request_id, -1)

    async def refund(self, request_id: str, buckets: list[Bucket]) -> None:
        for b in buckets:
            await self._call_adjust(b, request_id, -1)

    async def adjust(self, request_id: str, bucket: Bucket, actual_weight: int) -> None:
        await self._call_adjust(bucket, request_id, actual_weight)

    async def finish(self, finished: Sequence[Finished]) -> None:
        # One pipelined round trip for a whole batch of reports instead of one per bucket. EVALSHA
        # directly: a Script on a pipeline would first ask SCRIPT EXISTS, one more round trip.
        calls: list[tuple[Bucket, str, int]] = []
        for request_id, buckets, actual in finished:
            for b in buckets:
                if b.kind == "concurrent":
                    calls.append((b, request_id, -1))  # -1: remove the slot
                elif b.kind == "tokens" and actual is not None:
                    calls.append((b, request_id, actual))
        if not calls:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for b, request_id, weight in calls:
                    pipe.evalsha(self._adjust.sha, 3, *_keys(b), request_id, weight)
                await pipe.execute()
        except NoScriptError:  # Redis restarted or was flushed: the per-call path loads the script
            for b, request_id, weight in calls:  # each adjustment is idempotent, so a rerun is safe
                await self._call_adjust(b, request_id, weight)
        except (RedisError, OSError) as exc:
            self.failures += 1
            log.warning("rate-limit store unreachable on release: %s", exc)

    async def renew(self, running: Sequence[tuple[str, list[Bucket]]]) -> None:
        slots = [(b, request_id) for request_id, buckets in running for b in buckets if b.kind == "concurrent"]
        if not slots:
            return
        try:
            await self._renew(keys=_keys(slots[0][0]), args=[slots[0][1], LEASE_MS])  # loads the script
            async with self.client.pipeline(transaction=False) as pipe:
                for b, request_id in slots[1:]:
                    pipe.evalsha(self._renew.sha, 3, *_keys(b), request_id, LEASE_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the slots then live out their lease
            self.failures += 1
            log.warning("rate-limit store unreachable on renewal: %s", exc)

    async def _call_adjust(self, b: Bucket, request_id: str, weight: int) -> None:
        try:
            await self._adjust(keys=_keys(b), args=[request_id, weight])
        except (RedisError, OSError) as exc:
            self.failures += 1
            log.warning("rate-limit store unreachable on release: %s", exc)

    async def close(self) -> None:
        await self.client.aclose()
