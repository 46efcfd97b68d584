"""Redis clients that fail fast, and a breaker that remembers "Redis is down" for a moment.

redis-py's default client retries a failed command ten times with exponential
back-off, which would turn a Redis outage into seconds of latency per message.
Every Redis-backed store (locks, de-duplication, rate limits, the state cache) uses
:func:`sync_client` instead (one immediate retry, for a pooled connection that a
Redis restart broke) and a :class:`Breaker`: after a failure the store uses its
fallback for ``cool_down_s`` seconds, then tries Redis again, so it returns to
Redis on its own when Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger("pcrm.redis")

#: What a Redis outage looks like to redis-py.
try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    REDIS_DOWN: tuple[type[BaseException], ...] = (_RedisConnectionError, _RedisTimeoutError, RedisError, OSError)
except ImportError:  # pragma: no cover - redis is a dependency
    REDIS_DOWN = (OSError,)


def sync_client(url: str) -> Any:
    """A redis-py client for ``url`` that gives up quickly when Redis is down."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(url, retry=Retry(NoBackoff(), 1), socket_connect_timeout=0.5, socket_timeout=2.0)


def async_client(url: str) -> Any:
    """The asyncio twin of :func:`sync_client` (live events)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No socket_timeout: a pub/sub subscriber legitimately waits for minutes between messages.
    return aioredis.from_url(url, retry=Retry(NoBackoff(), 1), socket_connect_timeout=0.5)


class Breaker:
    """"Redis is down" for ``cool_down_s`` after a failure; thread-safe."""

    def __init__(self, name: str, cool_down_s: float = 2.0) -> None:
        self.name = name
        self.cool_down_s = cool_down_s
        self._down_until = 0.0
        self._was_down = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True when Redis may be tried (it worked last time, or the cool-down is over)."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self._was_down:
                log.warning("redis unavailable for %s (%s: %s); using the fallback", self.name,
                            type(exc).__name__, exc)
            self._was_down = True
            self._down_until = time.monotonic() + self.cool_down_s

    def succeeded(self) -> bool:
        """Record a success; True if this ends an outage (the caller may clean up)."""
        if not self._was_down:
            return False
        with self._lock:
            if not self._was_down:
                return False
            self._was_down = False
        log.warning("redis is back for %s", self.name)
        return True


class RedisKeys:
    """Every key the runtime keeps in Redis, named in this one place (under the deployment's
    ``PCRM_REDIS_PREFIX``): the admission scripts (:mod:`bot.admission`), the state cache
    (:mod:`bot.dialogue.redis_state`) and the rate limits (:mod:`bot.ratelimit`) name them alike."""

    __slots__ = ("prefix", "alive", "dirty")

    def __init__(self, prefix: str = "pcrm:") -> None:
        self.prefix = prefix
        #: Prefix of a lock queue entry's liveness key (``alive`` + token, with a TTL).
        self.alive = prefix + "lock:alive:"
        #: The set of conversation keys whose state was kept in Redis during a database outage.
        self.dirty = prefix + "state-dirty"

    def lock(self, key: str) -> str:
        """The FIFO queue (a list of tokens) of conversation ``key``; its head holds the lock."""
        return f"{self.prefix}lock:{key}"

    def answer(self, dedup_key: str) -> str:
        """The first answer (replies JSON) to delivery ``dedup_key``."""
        return f"{self.prefix}dedup:{dedup_key}"

    def state(self, key: str) -> str:
        """The cached dialogue state (JSON) of conversation ``key``."""
        return f"{self.prefix}state:{key}"

    def counter(self, bucket: str, window_s: int, now: float) -> str:
        """The counter of ``bucket`` in the window of ``window_s`` seconds around ``now``."""
        return f"{self.prefix}rl:{bucket}:{window_s}:{int(now // window_s)}"
