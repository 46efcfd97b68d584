"""Rate limits per sender and per channel, so one flooding number cannot starve the others.

Fixed windows: at most ``per_sender_per_minute`` messages of one conversation
(channel + sender) per minute and ``per_channel_per_second`` messages of one channel
per second.  :class:`RedisRateLimiter` counts across workers (``INCR`` + ``EXPIRE``
of a key per window); :class:`InProcessRateLimiter` counts in this process and is
the fallback while Redis is down.  Limits come from ``config.yml``::

    rate_limits: {per_sender_per_minute: 300, per_channel_per_second: 1000}

(0 or absent = no limit).  Over a limit, :meth:`RateLimiter.check` raises
:class:`RateLimited` with the seconds until the window ends; webhooks answer
``429`` with ``Retry-After``, the web chat socket says "잠시 후 다시".
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from bot.municipality import Municipality
from bot.redisconn import REDIS_DOWN, Breaker, sync_client


class RateLimited(Exception):
    """Over a limit; ``retry_after`` seconds until it may be tried again."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded ({scope}); retry after {retry_after}s")
        self.scope = scope
        self.retry_after = retry_after


class RateLimiter(ABC):
    """Counts hits per window and refuses those over the limit."""

    def __init__(self, per_sender_per_minute: int = 0, per_channel_per_second: int = 0) -> None:
        self.per_sender_per_minute = int(per_sender_per_minute or 0)
        self.per_channel_per_second = int(per_channel_per_second or 0)

    @abstractmethod
    def count(self, bucket: str, window_s: int, now: float) -> int:
        """Increment and return the count of ``bucket`` in the current window."""

    def peek(self, bucket: str, window_s: int, now: float) -> int:
        """The count of ``bucket`` in the current window, without counting (0 if unknown)."""
        return 0

    def hit(self, bucket: str, limit: int, window_s: int, now: float | None = None) -> None:
        """Count one event of ``bucket``; :class:`RateLimited` once more than ``limit`` fall in one
        window of ``window_s`` seconds (used for one-time codes and console logins as well)."""
        now = time.time() if now is None else now
        if limit and self.count(f"x:{bucket}", window_s, now) > limit:
            raise RateLimited(bucket.split(":", 1)[0], max(1, math.ceil(window_s - now % window_s)))

    def blocked(self, bucket: str, limit: int, window_s: int, now: float | None = None) -> None:
        """:class:`RateLimited` if ``bucket`` already reached ``limit`` in this window (not counting
        this call): a lockout that failures feed through :meth:`hit` and successes never touch."""
        now = time.time() if now is None else now
        if limit and self.peek(f"x:{bucket}", window_s, now) >= limit:
            raise RateLimited(bucket.split(":", 1)[0], max(1, math.ceil(window_s - now % window_s)))

    def check(self, channel: str, sender_id: str, now: float | None = None) -> None:
        """Count one message; raise :class:`RateLimited` if it is over a limit."""
        now = time.time() if now is None else now
        if self.per_channel_per_second and \
                self.count(f"c:{channel}", 1, now) > self.per_channel_per_second:
            raise RateLimited("channel", 1)
        if self.per_sender_per_minute and \
                self.count(f"s:{channel}:{sender_id}", 60, now) > self.per_sender_per_minute:
            raise RateLimited("sender", max(1, math.ceil(60 - now % 60)))


class InProcessRateLimiter(RateLimiter):
    """Counters in this process (one worker, or while Redis is down)."""

    def __init__(self, per_sender_per_minute: int = 0, per_channel_per_second: int = 0) -> None:
        super().__init__(per_sender_per_minute, per_channel_per_second)
        self._counts: dict[str, tuple[float, int]] = {}  # bucket -> (window start, count)
        self._lock = threading.Lock()

    def count(self, bucket: str, window_s: int, now: float) -> int:
        start = now - now % window_s
        key = f"{bucket}:{window_s}"
        with self._lock:
            seen_start, n = self._counts.get(key, (start, 0))
            n = n + 1 if seen_start == start else 1
            self._counts[key] = (start, n)
            if len(self._counts) > 100_000:  # forget ended windows
                self._counts = {k: v for k, v in self._counts.items() if v[0] >= now - 3600}
            return n

    def peek(self, bucket: str, window_s: int, now: float) -> int:
        start = now - now % window_s
        with self._lock:
            seen_start, n = self._counts.get(f"{bucket}:{window_s}", (start, 0))
        return n if seen_start == start else 0


# KEYS: channel counter, sender counter; ARGV: channel limit, its TTL, sender limit, its TTL.
# Returns {0, 0} within both limits, {1, n} over the channel's, {2, n} over the sender's.
_BOTH = """
local c = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if c > tonumber(ARGV[1]) then return {1, c} end
local s = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if s > tonumber(ARGV[3]) then return {2, s} end
return {0, 0}
"""


class RedisRateLimiter(RateLimiter):
    """Counters in Redis, shared by every worker."""

    def __init__(self, url: str, per_sender_per_minute: int = 0, per_channel_per_second: int = 0,
                 prefix: str = "pcrm:", client: Any = None) -> None:
        super().__init__(per_sender_per_minute, per_channel_per_second)
        self._redis = client or sync_client(url)
        self.prefix = prefix + "rl:"
        self.local = InProcessRateLimiter(per_sender_per_minute, per_channel_per_second)
        self.breaker = Breaker("rate limits")
        self._both = self._redis.register_script(_BOTH)

    def check(self, channel: str, sender_id: str, now: float | None = None) -> None:
        """Both counters in one round trip (a script: the sender is counted only if the
        channel is within its limit, as in :meth:`RateLimiter.check`)."""
        now = time.time() if now is None else now
        if not (self.per_channel_per_second and self.per_sender_per_minute) or not self.breaker.closed:
            super().check(channel, sender_id, now)
            return
        keys = self.window_keys(channel, sender_id, now)
        try:
            which, _n = self._both(keys=keys, args=[self.per_channel_per_second, 2, self.per_sender_per_minute, 61])
            self.breaker.succeeded()
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            super().check(channel, sender_id, now)
            return
        if int(which) == 1:
            raise RateLimited("channel", 1)
        if int(which) == 2:
            raise RateLimited("sender", max(1, math.ceil(60 - now % 60)))

    def window_keys(self, channel: str, sender_id: str, now: float) -> list[str]:
        """The counters of this second for ``channel`` and of this minute for the sender
        (also counted by bot/redis_gate.py's script, so both must name them alike)."""
        return [f"{self.prefix}c:{channel}:1:{int(now)}", f"{self.prefix}s:{channel}:{sender_id}:60:{int(now // 60)}"]

    def count(self, bucket: str, window_s: int, now: float) -> int:
        if self.breaker.closed:
            key = f"{self.prefix}{bucket}:{window_s}:{int(now // window_s)}"
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.incr(key)
                pipe.expire(key, window_s + 1)
                n, _ = pipe.execute()
                self.breaker.succeeded()
                return int(n)
            except REDIS_DOWN as exc:
                self.breaker.failed(exc)
        return self.local.count(bucket, window_s, now)

    def peek(self, bucket: str, window_s: int, now: float) -> int:
        if self.breaker.closed:
            try:
                raw = self._redis.get(f"{self.prefix}{bucket}:{window_s}:{int(now // window_s)}")
                self.breaker.succeeded()
                return int(raw or 0)
            except REDIS_DOWN as exc:
                self.breaker.failed(exc)
        return self.local.peek(bucket, window_s, now)


def make_rate_limiter(redis_url: str | None, config: Municipality | Mapping[str, Any],
                      prefix: str = "pcrm:") -> RateLimiter:
    limits = Municipality.of(config).rate_limits
    sender = limits.per_sender_per_minute or 0
    channel = limits.per_channel_per_second or 0
    if redis_url:
        return RedisRateLimiter(redis_url, sender, channel, prefix=prefix)
    return InProcessRateLimiter(sender, channel)
