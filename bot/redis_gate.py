"""The Redis work of one message in two round trips instead of seven.

With ``REDIS_URL`` a message needs, before its turn, the rate-limit counters
(:mod:`bot.ratelimit`), its place in the conversation's FIFO lock (:mod:`bot.locks`), the
first answer of a retried delivery (:mod:`bot.dedup`) and a dialogue state kept in Redis
during a database outage (:mod:`bot.dialogue.redis_state`); after it, the answer for
retries, the state cache entry and the lock's release. Each module does its part in its own
round trip, which is what they still do whenever this gate is not usable. The gate does the
"before" in one script (:data:`_ADMIT`: the keys, counters and lock queue are exactly those
modules') and the "after" in one pipeline, so the stores stay interchangeable: a message let
in by the gate and one let in by the modules queue on the same lock.

Faults: if Redis fails in :meth:`RedisGate.admit`, the caller uses the modules (each with its
own fallback); if it fails in :meth:`RedisGate.leave`, the lock entry expires by itself
(as when :class:`bot.locks.RedisLock` cannot release), the answer stays in the process's
de-dup memory and the state cache entry is marked stale, as the modules would do.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from bot.dedup import RedisDedup, replies_from_json, replies_to_json
from bot.dialogue.redis_state import RedisCachedStateStore
from bot.dialogue.state import DialogueState
from bot.locks import _ACQUIRE, _RELEASE, RedisLock
from bot.messages import Reply, new_id
from bot.ratelimit import RateLimited, RateLimiter, RedisRateLimiter
from bot.redisconn import REDIS_DOWN, Breaker

log = logging.getLogger("pcrm.redis.gate")

# KEYS: lock queue, channel counter, sender counter, de-dup key, dirty-state set, state cache key.
# ARGV: token, lock ttl ms, liveness prefix, enqueue (1/0), count (1/0), channel limit, its ttl,
#       sender limit, its ttl, conversation key.
# Returns {1, n} / {2, n} over the channel's / the sender's limit (nothing else done);
# {0, 0} wait (queued behind another message), {0, -1} our queue entry is gone (enqueue again),
# {0, 1, answer or false, pending state or false} the lock is ours.
_ADMIT = """
if ARGV[5] == '1' then
  if tonumber(ARGV[6]) > 0 then
    local c = redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], ARGV[7])
    if c > tonumber(ARGV[6]) then return {1, c} end
  end
  if tonumber(ARGV[8]) > 0 then
    local s = redis.call('INCR', KEYS[3])
    redis.call('EXPIRE', KEYS[3], ARGV[9])
    if s > tonumber(ARGV[8]) then return {2, s} end
  end
end
local got = (function() """ + _ACQUIRE + """ end)()
if got ~= 1 then return {0, got} end
local pending = false
if redis.call('SISMEMBER', KEYS[5], ARGV[10]) == 1 then pending = redis.call('GET', KEYS[6]) end
return {0, 1, redis.call('GET', KEYS[4]), pending}
"""

# KEYS: lock queue, de-dup key, state cache key, dirty-state set.
# ARGV: token, liveness prefix, answer JSON ('' = none), its ttl, state JSON ('' = none), its ttl,
#       was pending (1/0), conversation key.
_LEAVE = """
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
  if ARGV[7] == '1' then redis.call('SREM', KEYS[4], ARGV[8]) end
end
local q, me, pfx = KEYS[1], ARGV[1], ARGV[2]
""" + _RELEASE.replace("KEYS[1]", "q").replace("ARGV[1]", "me").replace("ARGV[2]", "pfx")


@dataclass
class Queued:
    """A message queued behind an earlier one of its conversation (held by another thread or
    worker). :meth:`RedisGate.admit` with ``wait=False`` returns it instead of sleeping, so the
    caller can wait on its event loop, not in one of its few threads, and then call again with it.
    """

    key: str
    dedup_key: str
    token: str
    keys: list[str]
    limits: list[int]
    now: float
    deadline: float
    enqueue: str = "1"
    count: str = "1"
    pause: float = 0.001
    #: How long to wait before the next call.
    wait_s: float = 0.0


@dataclass
class Admission:
    """A message let in: the lock is held; what Redis knew; what to write on leaving."""

    key: str
    token: str
    queue: str
    #: False when the lock wait timed out: the caller holds the lock's fallback instead.
    locked: bool = True
    #: The first answer of this delivery id, if it was answered before (a retry).
    answered: list[Reply] | None = None
    #: A state of the conversation kept in Redis during a database outage, not written back yet.
    pending: DialogueState | None = None
    #: Set by the caller: the de-dup key and the replies to keep for retries.
    dedup: tuple[str, list[Reply]] | None = None
    #: Set by the caller: the state just committed to SQL (JSON) and whether it was pending.
    state: tuple[DialogueState, str, bool] | None = None


class RedisGate:
    """One script in, one pipeline out (see the module doc)."""

    def __init__(self, lock: RedisLock, dedup: RedisDedup, states: RedisCachedStateStore | None) -> None:
        self.lock, self.dedup, self.states = lock, dedup, states
        self._redis = lock.client  # the same server as the others (checked by usable())
        self._admit = self._redis.register_script(_ADMIT)
        self._release = self._redis.register_script(_RELEASE)
        self._leave = self._redis.register_script(_LEAVE)
        self.breaker = Breaker("message gate")

    @staticmethod
    def usable(lock: Any, dedup: Any, states: Any) -> bool:
        """Whether the lock, de-dup and state cache are the Redis ones, on one Redis server."""
        if not isinstance(lock, RedisLock) or not isinstance(dedup, RedisDedup):
            return False
        clients = [lock.client, dedup.client]
        if isinstance(states, RedisCachedStateStore):
            clients.append(states.client)
        elif states is not None and hasattr(states, "pending"):
            return False

        def where(c: Any) -> tuple[Any, ...]:
            kw = c.connection_pool.connection_kwargs
            return kw.get("host"), kw.get("port"), kw.get("db", 0), kw.get("path")

        return len({where(c) for c in clients}) == 1

    @property
    def ready(self) -> bool:
        """Redis believed up by every part (else the modules, with their fallbacks)."""
        states_ok = self.states is None or (self.states.breaker.closed and not self.states.stale)
        return self.breaker.closed and self.lock.breaker.closed and self.dedup.breaker.closed and states_ok

    def admit(self, channel: str, sender_id: str, key: str, dedup_key: str, limiter: RateLimiter | None,
              *, wait: bool = True, queued: Queued | None = None) -> Admission | Queued | None:
        """Count the message, queue for the conversation's lock and wait for it, and read the
        retry answer and a pending state. Raises :class:`RateLimited` (nothing else done);
        None if Redis failed (the caller uses the modules). With ``wait=False`` a message that
        must wait is returned as :class:`Queued` (call again with it after ``wait_s``)."""
        lock = self.lock
        alive = lock.prefix + "alive:"
        q = queued or self._entry(channel, sender_id, key, dedup_key, limiter)
        try:
            while True:
                res = self._admit(keys=q.keys, args=[q.token, lock.timeout_ms, alive, q.enqueue, q.count,
                                                     *q.limits, key])
                q.count = "0"
                if int(res[0]) == 1:
                    raise RateLimited("channel", 1)
                if int(res[0]) == 2:
                    raise RateLimited("sender", max(1, math.ceil(60 - q.now % 60)))
                got = int(res[1])
                if got == 1:
                    break
                q.enqueue = "1" if got == -1 else "0"
                if time.monotonic() > q.deadline:  # as RedisLock: leave the queue, take the fallback lock
                    log.warning("conversation lock wait over %.0fs; going ahead", lock.blocking_timeout)
                    self._release(keys=[q.keys[0]], args=[q.token, alive])
                    lock.stats["fallback"] += 1
                    return Admission(key, q.token, q.keys[0], locked=False)
                q.wait_s, q.pause = q.pause, min(q.pause * 1.5, 0.01)
                if not wait:
                    return q
                time.sleep(q.wait_s)
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            return None
        self.breaker.succeeded()
        lock.stats["redis"] += 1
        adm = Admission(key, q.token, q.keys[0])
        answered, pending = res[2], res[3]
        adm.answered = replies_from_json(answered) if answered else self.dedup.local.get(dedup_key)
        if pending:
            adm.pending = DialogueState.from_json(pending)
        return adm

    def _entry(self, channel: str, sender_id: str, key: str, dedup_key: str,
               limiter: RateLimiter | None) -> Queued:
        """A new queue entry (not sent yet); in-process rate limits are counted here."""
        now = time.time()
        limits = [0, 2, 0, 61]
        keys_rl = ["-", "-"]
        if isinstance(limiter, RedisRateLimiter) and limiter.breaker.closed:
            limits = [limiter.per_channel_per_second, 2, limiter.per_sender_per_minute, 61]
            keys_rl = limiter.window_keys(channel, sender_id, now)
        elif limiter is not None:  # in-process counters (or Redis limits while their breaker is open)
            limiter.check(channel, sender_id, now)
        state_key = self.states.prefix + key if self.states is not None else "-"
        dirty = self.states.dirty_key if self.states is not None else "-"
        keys = [self.lock.prefix + key, *keys_rl, self.dedup.prefix + dedup_key, dirty, state_key]
        return Queued(key, dedup_key, new_id(), keys, limits, now, time.monotonic() + self.lock.blocking_timeout)

    def abandon(self, q: Queued) -> None:
        """Leave the queue without having held the lock (the waiting caller was cancelled)."""
        try:
            self._release(keys=[q.keys[0]], args=[q.token, self.lock.prefix + "alive:"])
        except REDIS_DOWN as exc:  # the entry expires by itself
            self.breaker.failed(exc)

    def leave(self, adm: Admission) -> None:
        """Keep the answer for retries, refresh the state cache, release the lock: one script
        (a redis-py pipeline of the three costs twice the CPU of the script call)."""
        answer, state_raw, was_pending, state_key = "", "", "0", "-"
        if adm.dedup is not None:
            dkey, replies = adm.dedup
            self.dedup.local.put(dkey, replies)
            answer = replies_to_json(replies)
        else:
            dkey = "-"
        if adm.state is not None and self.states is not None:
            state, state_raw, pending = adm.state
            state_key, was_pending = state.key, "1" if pending else "0"
        states = self.states
        try:
            self._leave(
                keys=[adm.queue, self.dedup.prefix + dkey, states.prefix + state_key if states else "-",
                      states.dirty_key if states else "-"],
                args=[adm.token, self.lock.prefix + "alive:", answer, self.dedup.ttl_s, state_raw,
                      states.ttl_s if states else 0, was_pending, state_key])
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            if adm.state is not None and states is not None:
                states.mark_stale(adm.state[0].key)  # deleted once Redis is back
