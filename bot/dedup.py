"""The first answer to each delivery id, so a retried webhook gets the same reply.

Channels retry deliveries (Twilio, Telegram, Kakao); a retry may reach another
worker.  :class:`RedisDedup` keeps ``<channel>:<delivery id>`` → the first answer's
replies under ``SET NX EX`` (the first answer wins, kept ``ttl_s`` seconds), so every
worker answers a retry the same; :class:`InProcessDedup` does it for one process and
is also the fallback while Redis is down.  The database's unique constraint on the
delivery id stays the final guard against recording a message twice.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any

from bot.messages import Button, Reply
from bot.redisconn import REDIS_DOWN, Breaker, sync_client


def replies_to_json(replies: list[Reply]) -> str:
    return json.dumps([r.to_dict() for r in replies], ensure_ascii=False)


def replies_from_json(raw: str | bytes) -> list[Reply]:
    out = []
    for r in json.loads(raw):
        buttons = [Button(**b) for b in r.get("buttons") or []]
        out.append(Reply(r.get("text", ""), buttons=buttons, hints=dict(r.get("hints") or {})))
    return out


class DedupStore(ABC):
    """Delivery id → the replies first given to it."""

    @abstractmethod
    def get(self, key: str) -> list[Reply] | None:
        """The first answer to delivery ``key``, or None if it was not answered yet (or is forgotten)."""

    @abstractmethod
    def put(self, key: str, replies: list[Reply]) -> bool:
        """Remember the answer unless one is already kept; True if this one was kept."""


class InProcessDedup(DedupStore):
    """The last ``size`` answers in this process."""

    def __init__(self, size: int = 10000) -> None:
        self._data: OrderedDict[str, list[Reply]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str) -> list[Reply] | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, replies: list[Reply]) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = replies
            while len(self._data) > self._size:
                self._data.popitem(last=False)
            return True


class RedisDedup(DedupStore):
    """Answers in Redis with a TTL; the in-process store while Redis is down."""

    def __init__(self, url: str, prefix: str = "pcrm:", ttl_s: int = 24 * 3600, client: Any = None) -> None:
        self._redis = client or sync_client(url)
        self.prefix = prefix + "dedup:"
        self.ttl_s = ttl_s
        self.local = InProcessDedup()
        self.breaker = Breaker("webhook de-duplication")

    @property
    def client(self) -> Any:
        """The Redis client (the admission gate runs its scripts on the same server)."""
        return self._redis

    def get(self, key: str) -> list[Reply] | None:
        if self.breaker.closed:
            try:
                raw = self._redis.get(self.prefix + key)
                self.breaker.succeeded()
                if raw is not None:
                    return replies_from_json(raw)
            except REDIS_DOWN as exc:
                self.breaker.failed(exc)
        return self.local.get(key)

    def put(self, key: str, replies: list[Reply]) -> bool:
        kept = self.local.put(key, replies)
        if self.breaker.closed:
            try:
                kept = bool(self._redis.set(self.prefix + key, replies_to_json(replies), nx=True, ex=self.ttl_s))
                self.breaker.succeeded()
            except REDIS_DOWN as exc:
                self.breaker.failed(exc)
        return kept


def make_dedup(redis_url: str | None, prefix: str = "pcrm:") -> DedupStore:
    return RedisDedup(redis_url, prefix=prefix) if redis_url else InProcessDedup()
