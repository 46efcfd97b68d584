"""Rate limits per sender and per channel, so one flooding number cannot starve the others.

Fixed windows: at most ``per_sender_per_minute`` messages of one conversation
(channel + sender) per minute and ``per_channel_per_second`` messages of one channel
per second.  :class:`InProcessRateLimiter` counts in this process; :class:`RedisRateLimiter`
counts across workers (``INCR`` + ``EXPIRE`` of a key per window, falling back to its own
in-process counters while Redis is down).  With Redis, a message's two counters are counted
by the admission script (:class:`bot.admission.RedisGate`), on the limits and buckets named
here (:meth:`RateLimiter.limits`).  Limits come from ``config.yml``::

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
from bot.redisconn import REDIS_DOWN, Breaker, RedisKeys, sync_client


class RateLimited(Exception):
    """Over a limit; ``retry_after`` seconds until it may be tried again."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded ({scope}); retry after {retry_after}s")
        self.scope = scope
        self.retry_after = retry_after

    @classmethod
    def until_window_end(cls, scope: str, window_s: int, now: float) -> RateLimited:
        """Over the limit of a fixed window of ``window_s`` seconds: retry when it ends."""
        return cls(scope, max(1, math.ceil(window_s - now % window_s)))


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
            raise RateLimited.until_window_end(bucket.split(":", 1)[0], window_s, now)

    def blocked(self, bucket: str, limit: int, window_s: int, now: float | None = None) -> None:
        """:class:`RateLimited` if ``bucket`` already reached ``limit`` in this window (not counting
        this call): a lockout that failures feed through :meth:`hit` and successes never touch."""
        now = time.time() if now is None else now
        if limit and self.peek(f"x:{bucket}", window_s, now) >= limit:
            raise RateLimited.until_window_end(bucket.split(":", 1)[0], window_s, now)

    def limits(self, channel: str, sender_id: str) -> list[tuple[str, str, int, int]]:
        """A message's limits that are set, in the order they are counted (the sender is not
        counted once the channel is over): ``(scope, bucket, limit, window_s)``."""
        return [(scope, bucket, limit, window) for scope, bucket, limit, window in (
            ("channel", f"c:{channel}", self.per_channel_per_second, 1),
            ("sender", f"s:{channel}:{sender_id}", self.per_sender_per_minute, 60)) if limit]

    def check(self, channel: str, sender_id: str, now: float | None = None) -> None:
        """Count one message; raise :class:`RateLimited` if it is over a limit."""
        now = time.time() if now is None else now
        for scope, bucket, limit, window in self.limits(channel, sender_id):
            if self.count(bucket, window, now) > limit:
                raise RateLimited.until_window_end(scope, window, now)


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


class RedisRateLimiter(RateLimiter):
    """Counters in Redis, shared by every worker."""

    def __init__(self, url: str, per_sender_per_minute: int = 0, per_channel_per_second: int = 0,
                 prefix: str = "pcrm:", client: Any = None) -> None:
        super().__init__(per_sender_per_minute, per_channel_per_second)
        self._redis = client or sync_client(url)
        self.keys = RedisKeys(prefix)
        self.local = InProcessRateLimiter(per_sender_per_minute, per_channel_per_second)
        self.breaker = Breaker("rate limits")

    def count(self, bucket: str, window_s: int, now: float) -> int:
        if self.breaker.closed:
            key = self.keys.counter(bucket, window_s, now)
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
                raw = self._redis.get(self.keys.counter(bucket, window_s, now))
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
