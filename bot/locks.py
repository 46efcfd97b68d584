"""Per-conversation locks: one conversation's messages are handled one at a time, in order.

``with lock.hold(conversation_key): ...`` — two backends behind one interface (with Redis,
the lock is a FIFO queue in Redis kept by the admission scripts, :class:`bot.admission.RedisGate`,
which falls back to :class:`DbLock` while Redis is down):

* :class:`InProcessLock` — FIFO locks in this process (one worker, or as the first
  stage of the others: waiters of one process queue here, not on the network).
* :class:`DbLock` — PostgreSQL ``pg_advisory_xact_lock`` on a 64-bit hash of the key,
  in a transaction of its own (ended with the turn, or by the server if the process
  dies).  On SQLite there is one process per database file, so the process lock is
  enough.  Used alone without Redis, and as the Redis lock's fallback.

If even the fallback fails (database down too), the turn runs under the process
lock alone: answering the resident beats strict ordering across workers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from abc import ABC
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

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
