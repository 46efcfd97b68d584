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

import importlib.util
import logging
import sys
import threading
import time
from types import ModuleType
from typing import Any

log = logging.getLogger("pcrm.redis")


def _exceptions() -> ModuleType | None:
    """redis-py's ``redis.exceptions``, without importing the ``redis`` package when it is not
    imported yet.

    The package's ``__init__`` imports the whole client, and redis-py 8 imports its observability
    layer with the OpenTelemetry SDK and psutil too: ≈ 0.1 CPU s of every ``pcrm serve`` start,
    also without ``REDIS_URL`` (no client is ever made then). The exception classes live in a
    module of their own that imports nothing of redis, so it is loaded from its file under its
    own name (``sys.modules["redis.exceptions"]``): when a client later imports the package, the
    package takes these very classes from there, so ``except REDIS_DOWN`` catches what it raises.
    """
    loaded = sys.modules.get("redis.exceptions")
    if loaded is not None:
        return loaded
    if "redis" in sys.modules:
        import redis.exceptions

        return redis.exceptions
    spec = importlib.util.find_spec("redis")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    sub = importlib.util.spec_from_file_location(
        "redis.exceptions", f"{next(iter(spec.submodule_search_locations))}/exceptions.py")
    if sub is None or sub.loader is None:
        return None
    module = importlib.util.module_from_spec(sub)
    sys.modules["redis.exceptions"] = module
    try:
        sub.loader.exec_module(module)
    except BaseException:
        del sys.modules["redis.exceptions"]
        raise
    return module


def _redis() -> Any:
    """The ``redis`` package (imported on the first client), with ``redis.exceptions`` set as an
    attribute too (the import system sets it only when it loads the submodule itself)."""
    import redis

    if not hasattr(redis, "exceptions"):
        redis.exceptions = sys.modules["redis.exceptions"]
    return redis


_exc = _exceptions()
#: What a Redis outage looks like to redis-py.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    (_exc.ConnectionError, _exc.TimeoutError, _exc.RedisError, OSError) if _exc is not None
    else (OSError,))  # pragma: no cover - redis is a dependency


def sync_client(url: str) -> Any:
    """A redis-py client for ``url`` that gives up quickly when Redis is down."""
    _redis()
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(url, retry=Retry(NoBackoff(), 1), socket_connect_timeout=0.5, socket_timeout=2.0)


def async_client(url: str) -> Any:
    """The asyncio twin of :func:`sync_client` (live events)."""
    _redis()
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
