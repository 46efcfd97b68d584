"""Live events for the agent console and the web-chat widget (publish / subscribe).

One process: asyncio queues. Several processes: Redis pub/sub (``REDIS_URL``),
behind the same two methods, so the console code is the same either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger("pcrm.live")


class LiveEvents(ABC):
    """Topic-based fan-out. Topics: ``dept:<code>``, ``handoff:<id>``, ``conv:<key>``."""

    @abstractmethod
    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Deliver ``payload`` to every current subscriber of ``topic``."""

    @abstractmethod
    def subscribe(self, *topics: str) -> Any:
        """Async context manager yielding an async iterator of ``(topic, payload)``."""


class InProcessLiveEvents(LiveEvents):
    """Queues in this process only."""

    def __init__(self) -> None:
        self._subs: dict[str, set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = defaultdict(set)

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        for q in list(self._subs.get(topic, ())):
            q.put_nowait((topic, payload))

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for t in topics:
            self._subs[t].add(q)

        async def stream() -> AsyncIterator[tuple[str, dict[str, Any]]]:
            while True:
                yield await q.get()

        try:
            yield stream()
        finally:
            for t in topics:
                self._subs[t].discard(q)


class RedisLiveEvents(LiveEvents):
    """Redis pub/sub, so a message handled by one worker reaches a console on another."""

    def __init__(self, url: str, prefix: str = "pcrm:live:") -> None:
        from bot.redisconn import async_client

        self._redis = async_client(url)
        self._prefix = prefix

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish; a Redis outage is logged, never raised (live events are best effort)."""
        try:
            await self._redis.publish(self._prefix + topic, json.dumps(payload, ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001
            log.warning("live event to %s lost: redis unavailable (%s)", topic, type(exc).__name__)

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(*[self._prefix + t for t in topics])

        async def stream() -> AsyncIterator[tuple[str, dict[str, Any]]]:
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                topic = msg["channel"].decode()[len(self._prefix):]
                yield topic, json.loads(msg["data"])

        try:
            yield stream()
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()


def make_live_events(redis_url: str | None, prefix: str = "pcrm:") -> LiveEvents:
    """Redis pub/sub when ``REDIS_URL`` is set (events cross workers), else in-process queues."""
    return RedisLiveEvents(redis_url, prefix=prefix + "live:") if redis_url else InProcessLiveEvents()
