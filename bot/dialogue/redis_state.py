"""A Redis cache in front of the SQL state store (read-through, write-through).

The SQL store stays the source of truth: every save goes to SQL first, then to
Redis, so a worker killed in the middle of a form loses nothing and any other
worker continues it.  Loads are served from Redis when the entry is there (one
round trip instead of a query), else from SQL and cached for ``ttl_s`` seconds.

Faults:

* Redis down: loads and saves go to SQL alone (a :class:`~bot.redisconn.Breaker`
  skips Redis for a moment, then tries again).  Keys whose cache entry could not be
  updated or deleted are remembered and deleted once Redis answers again, before
  anything is read from it, so a stale entry is never served.
* SQL down: a save is kept in Redis and marked dirty, so the conversation goes on
  (the resident still gets answers); :meth:`RedisCachedStateStore.flush_dirty`
  writes dirty states to SQL when it is back (the spool flusher calls it).  If
  Redis is down too, the save fails as it would without the cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from bot.dialogue.state import DialogueState, StateStore
from bot.redisconn import REDIS_DOWN, Breaker, RedisKeys, sync_client

log = logging.getLogger("pcrm.state.redis")


class RedisCachedStateStore(StateStore):
    """:class:`StateStore` = ``backing`` (SQL) with a Redis cache in front."""

    def __init__(self, backing: StateStore, url: str, prefix: str = "pcrm:", ttl_s: int = 3600,
                 client: Any = None) -> None:
        self.backing = backing
        self._redis = client or sync_client(url)
        self.keys = RedisKeys(prefix)
        self.ttl_s = ttl_s
        self.breaker = Breaker("dialogue state cache")
        self._stale: set[str] = set()
        self._stale_lock = threading.Lock()
        self.hits = self.misses = 0

    # --- Redis, carefully ------------------------------------------------------------------
    def _redis_call(self, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """(True, result) or (False, None) when Redis is down or skipped."""
        if not self.breaker.closed:
            return False, None
        try:
            if self._stale:
                self._heal()
            result = fn()
        except REDIS_DOWN as exc:
            self.breaker.failed(exc)
            return False, None
        self.breaker.succeeded()
        return True, result

    def _heal(self) -> None:
        """Delete entries that may be stale (an update to them failed while Redis was down)."""
        with self._stale_lock:
            keys = list(self._stale)
        if keys:
            self._redis.delete(*[self.keys.state(k) for k in keys])
            with self._stale_lock:
                self._stale.difference_update(keys)
            log.warning("dropped %d possibly stale state cache entr(ies)", len(keys))

    @property
    def client(self) -> Any:
        """The Redis client (the admission scripts run on the same server: bot/admission.py)."""
        return self._redis

    @property
    def stale(self) -> bool:
        """Whether some cached states may be stale (an update failed while Redis was down)."""
        return bool(self._stale)

    def heal(self) -> bool:
        """Drop the entries that may be stale now (before a caller reads the cache itself);
        False while Redis is down."""
        ok, _ = self._redis_call(lambda: None)
        return ok

    def mark_stale(self, key: str) -> None:
        """Drop ``key``'s cached state as soon as Redis answers again (its update failed)."""
        with self._stale_lock:
            self._stale.add(key)

    # --- StateStore ------------------------------------------------------------------------
    def load(self, key: str) -> DialogueState:
        ok, raw = self._redis_call(lambda: self._redis.get(self.keys.state(key)))
        if ok and raw is not None:
            self.hits += 1
            return DialogueState.from_json(raw)
        self.misses += 1
        state = self.backing.load(key)
        if ok:
            self._redis_call(lambda: self._redis.set(self.keys.state(key), state.to_json(), ex=self.ttl_s, nx=True))
        return state

    def save(self, state: DialogueState) -> None:
        loaded = state.version
        try:
            self.backing.save(state)
        except Exception as exc:  # noqa: BLE001 - the database is down: keep it in Redis, dirty
            state.version = loaded + 1
            raw = state.to_json()

            def keep() -> None:
                pipe = self._redis.pipeline(transaction=True)
                pipe.set(self.keys.state(state.key), raw)  # no TTL until written back
                pipe.sadd(self.keys.dirty, state.key)
                pipe.execute()

            ok, _ = self._redis_call(keep)
            if not ok:
                state.version = loaded
                raise
            log.warning("state store unavailable (%s); state of a conversation kept in Redis until it returns",
                        type(exc).__name__)
            return
        raw = state.to_json()
        ok, _ = self._redis_call(lambda: self._redis.set(self.keys.state(state.key), raw, ex=self.ttl_s))
        if not ok:
            self.mark_stale(state.key)

    def delete(self, key: str) -> None:
        self.backing.delete(key)

        def drop() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(self.keys.state(key))
            pipe.srem(self.keys.dirty, key)
            pipe.execute()

        ok, _ = self._redis_call(drop)
        if not ok:
            self.mark_stale(key)

    # --- for a caller that loads and saves in SQL itself (the inbox) ----------------------
    def pending(self, key: str) -> DialogueState | None:
        """The state of ``key`` kept in Redis during a database outage and not written back yet."""

        ok, dirty = self._redis_call(lambda: self._redis.sismember(self.keys.dirty, key))
        if not ok or not dirty:
            return None
        ok, raw = self._redis_call(lambda: self._redis.get(self.keys.state(key)))
        return DialogueState.from_json(raw) if ok and raw is not None else None

    def saved(self, state: DialogueState, was_pending: bool = False, raw: str | None = None) -> None:
        """``state`` (JSON ``raw``) was just committed to SQL by the caller: refresh the cache entry."""
        raw = raw if raw is not None else state.to_json()

        def put() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self.keys.state(state.key), raw, ex=self.ttl_s)
            pipe.srem(self.keys.dirty, state.key)
            pipe.execute()

        ok, _ = self._redis_call(put if was_pending else
                                 lambda: self._redis.set(self.keys.state(state.key), raw, ex=self.ttl_s))
        if not ok:
            self.mark_stale(state.key)

    # --- write-back ------------------------------------------------------------------------
    def flush_dirty(self, lock: Callable[[str], AbstractContextManager[Any]] | None = None) -> int:
        """Write states kept in Redis during a database outage to SQL; returns how many."""
        ok, keys = self._redis_call(lambda: self._redis.smembers(self.keys.dirty))
        if not ok or not keys:
            return 0
        written = 0
        for raw_key in keys:
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            with (lock or (lambda _k: nullcontext()))(key):
                ok, raw = self._redis_call(lambda k=key: self._redis.get(self.keys.state(k)))
                if not ok:
                    return written
                if raw is not None:
                    state = DialogueState.from_json(raw)
                    state.version = self.backing.load(key).version  # SQL's version; this save wins
                    self.backing.save(state)  # raises while the database is still down
                    self._redis_call(lambda s=state: self._redis.set(self.keys.state(s.key), s.to_json(),
                                                                     ex=self.ttl_s))
                self._redis_call(lambda k=key: self._redis.srem(self.keys.dirty, k))
                written += 1
        return written
