"""Per-conversation locks: one conversation's messages are handled one at a time, in order.

``with lock.hold(conversation_key): ...`` — three backends behind one interface:

* :class:`InProcessLock` — FIFO locks in this process (one worker, or as the first
  stage of the others: waiters of one process queue here, not on the network).
* :class:`DbLock` — PostgreSQL ``pg_advisory_xact_lock`` on a 64-bit hash of the key,
  in a transaction of its own (ended with the turn, or by the server if the process
  dies).  On SQLite there is one process per database file, so the process lock is
  enough.  Used alone without Redis, and as :class:`RedisLock`'s fallback.
* :class:`RedisLock` — a FIFO queue in Redis (a list per conversation; the head holds
  the lock; every entry has a liveness key with a TTL so a killed worker's entry is
  dropped after ``timeout`` seconds).  A plain Redis mutex (redis-py's ``Lock``)
  lets waiters race on every poll, so a later message could overtake an earlier
  one; the queue keeps arrival order across workers.  When Redis is unreachable it
  falls back to :class:`DbLock` (residents still get answers) and returns to Redis
  after a short cool-down, once Redis answers again.

If even the fallback fails (database down too), the turn runs under the process
lock alone: answering the resident beats strict ordering across workers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from abc import ABC
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from bot.redisconn import REDIS_DOWN, Breaker, sync_client

log = logging.getLogger("pcrm.locks")


class _FifoLock:
    """A mutex that hands itself to waiters in arrival order."""

    __slots__ = ("_mutex", "_waiters", "_held", "users")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False
        self.users = 0

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            ev = threading.Event()
            self._waiters.append(ev)
        ev.wait()  # release() handed the lock over to us

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False


class ConversationLock(ABC):
    """Serialises the handling of one conversation's messages (see the module doc)."""

    #: Which backend served how many holds ("process", "redis", "fallback", "database", "none").
    stats: Counter[str]

    def __init__(self) -> None:
        self._locks: dict[str, _FifoLock] = {}
        self._guard = threading.Lock()
        self.stats = Counter()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of conversation ``key`` for the body of the ``with``."""
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = _FifoLock()
            lock.users += 1
        lock.acquire()
        try:
            with self._remote(key):
                yield
        finally:
            lock.release()
            with self._guard:
                lock.users -= 1
                if lock.users == 0:
                    self._locks.pop(key, None)

    def _remote(self, key: str) -> Any:
        """The cross-process part, entered with the process lock held."""
        self.stats["process"] += 1
        return nullcontext()


class InProcessLock(ConversationLock):
    """One process: FIFO threading locks per conversation."""


def _advisory_key(key: str) -> int:
    """A stable signed 64-bit number for ``key`` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class DbLock(ConversationLock):
    """PostgreSQL advisory locks (a process lock on SQLite)."""

    def __init__(self, url: str, wait_s: float = 30.0) -> None:
        super().__init__()
        from sqlalchemy.engine import make_url

        from crm_store.db import make_engine, resolve_url

        self.postgres = make_url(resolve_url(url)).get_backend_name() == "postgresql"
        self.wait_s = wait_s
        # A pool of its own: lock holders must never starve the turns they protect of connections.
        self._engine = make_engine(url, pool_size=2, max_overflow=64, pool_timeout=5) if self.postgres else None

    def _remote(self, key: str) -> Any:
        if self._engine is None:
            self.stats["process"] += 1
            return nullcontext()
        return self._advisory(key)

    @contextmanager
    def _advisory(self, key: str) -> Iterator[None]:
        from sqlalchemy import text

        assert self._engine is not None
        try:
            conn = self._engine.connect()
        except Exception as exc:  # noqa: BLE001 - the database is down: answer anyway
            log.warning("database lock unavailable (%s); process lock only", type(exc).__name__)
            self.stats["none"] += 1
            yield
            return
        try:
            try:
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(self.wait_s * 1000)}ms'"))
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _advisory_key(key)})
                self.stats["database"] += 1
            except Exception as exc:  # noqa: BLE001 - timed out or the database went away
                log.warning("database lock not taken (%s); process lock only", type(exc).__name__)
                self.stats["none"] += 1
            yield
        finally:
            try:
                conn.rollback()  # ends the transaction: releases the advisory lock
            except Exception:  # noqa: BLE001
                log.debug("rollback of the lock transaction failed", exc_info=True)
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the lock connection failed", exc_info=True)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


# KEYS[1] queue; ARGV: token, ttl ms, liveness prefix, enqueue (1/0).
# Returns 1 = we hold it (head of the queue), 0 = wait, -1 = our entry is gone (re-enqueue).
_ACQUIRE = """
local q, me, ttl, pfx = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('SET', pfx .. me, '1', 'PX', ttl)
if ARGV[4] == '1' then redis.call('RPUSH', q, me) end
redis.call('PEXPIRE', q, ttl * 2)
while true do
  local head = redis.call('LINDEX', q, 0)
  if not head then return -1 end
  if head == me then return 1 end
  if redis.call('EXISTS', pfx .. head) == 1 then
    if redis.call('LPOS', q, me) then return 0 end
    return -1
  end
  redis.call('LPOP', q)
end
"""
# KEYS[1] queue; ARGV: token, liveness prefix.
_RELEASE = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1])
else redis.call('LREM', KEYS[1], 1, ARGV[1]) end
redis.call('DEL', ARGV[2] .. ARGV[1])
return 1
"""


class RedisLock(ConversationLock):
    """A FIFO lock per conversation in Redis, falling back to ``fallback`` while Redis is down."""

    def __init__(self, url: str, fallback: ConversationLock | None = None, prefix: str = "pcrm:",
                 timeout: float = 10.0, blocking_timeout: float = 15.0, client: Any = None) -> None:
        super().__init__()
        self._redis = client or sync_client(url)
        self.fallback = fallback
        self.prefix = prefix + "lock:"
        self.timeout_ms = int(timeout * 1000)
        self.blocking_timeout = blocking_timeout
        self.breaker = Breaker("conversation locks")
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._release_script = self._redis.register_script(_RELEASE)

    @property
    def client(self) -> Any:
        """The Redis client (the admission gate runs its scripts on the same server)."""
        return self._redis

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Queue in Redis straight away (no process lock first: that would let a later
        message of another worker overtake an earlier one waiting here)."""
        token: str | None = None
        if self.breaker.closed:
            try:
                token = self._acquire(key)
                self.breaker.succeeded()
            except REDIS_DOWN as exc:
                self.breaker.failed(exc)
        if token is None:
            fallback = self.fallback or InProcessLock()
            self.stats["fallback"] += 1
            with fallback.hold(key):
                yield
            return
        self.stats["redis"] += 1
        try:
            yield
        finally:
            try:
                self._release_script(keys=[self.prefix + key], args=[token, self.prefix + "alive:"])
            except REDIS_DOWN as exc:  # the entry expires by itself
                self.breaker.failed(exc)

    def _acquire(self, key: str) -> str | None:
        """Queue up and wait to be the head; the token, or None after ``blocking_timeout``."""
        token = uuid.uuid4().hex
        qkey, alive = self.prefix + key, self.prefix + "alive:"
        deadline = time.monotonic() + self.blocking_timeout
        enqueue, pause = "1", 0.001
        while True:
            got = self._acquire_script(keys=[qkey], args=[token, self.timeout_ms, alive, enqueue])
            if got == 1:
                return token
            enqueue = "1" if got == -1 else "0"
            if time.monotonic() > deadline:
                log.warning("conversation lock wait over %.0fs; going ahead", self.blocking_timeout)
                self._release_script(keys=[qkey], args=[token, alive])
                return None
            time.sleep(pause)
            pause = min(pause * 1.5, 0.01)


def make_conversation_lock(redis_url: str | None, database_url: str, prefix: str = "pcrm:") -> ConversationLock:
    """Redis (with the database as fallback) when ``REDIS_URL`` is set, else the database lock."""
    db = DbLock(database_url)
    if redis_url:
        return RedisLock(redis_url, fallback=db, prefix=prefix)
    return db
