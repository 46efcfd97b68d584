"""The first answer to each delivery id, so a retried webhook gets the same reply.

Channels retry deliveries (Twilio, Telegram, Kakao); a retry may reach another
worker.  :class:`InProcessDedup` keeps ``<channel>:<delivery id>`` → the first answer's
replies for one process; with Redis the admission scripts keep them there under
``SET NX EX`` for every worker (:class:`bot.admission.RedisGate`, which uses this store
while Redis is down).  The database's unique constraint on the delivery id stays the
final guard against recording a message twice.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict

from bot.messages import Button, Reply


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

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._data.clear()

    def put(self, key: str, replies: list[Reply]) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = replies
            while len(self._data) > self._size:
                self._data.popitem(last=False)
            return True
