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


class _Hub:
    """One Redis pub/sub connection for every subscriber of this process (on one event loop).

    A socket per subscriber would hold a Redis connection per open web chat and console: a
    few hundred residents exhaust the client pool (``MaxConnectionsError``), and then neither
    subscriptions nor publishes get a connection. Here a topic is subscribed once, when its
    first local subscriber arrives, and unsubscribed when its last one leaves; one reader task
    hands messages to the local subscribers' queues. redis-py's PubSub reconnects and
    re-subscribes on its own; while Redis is down the reader waits and tries again.
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.prefix = prefix
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.local = InProcessLiveEvents()
        self.counts: dict[str, int] = {}
        self._commands = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def add(self, topics: tuple[str, ...]) -> None:
        new = [t for t in dict.fromkeys(topics) if self.counts.get(t, 0) == 0]
        for t in topics:
            self.counts[t] = self.counts.get(t, 0) + 1
        if new:
            try:
                async with self._commands:
                    await self.pubsub.subscribe(*[self.prefix + t for t in new])
            except Exception as exc:  # noqa: BLE001 - best effort: the reader re-subscribes once Redis is back
                log.warning("live topics not subscribed yet: redis unavailable (%s)", type(exc).__name__)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read())

    async def remove(self, topics: tuple[str, ...]) -> None:
        gone = []
        for t in topics:
            left = self.counts.get(t, 0) - 1
            if left <= 0:
                self.counts.pop(t, None)
                gone.append(t)
            else:
                self.counts[t] = left
        if gone:
            try:
                async with self._commands:
                    await self.pubsub.unsubscribe(*[self.prefix + t for t in gone])
            except Exception:  # noqa: BLE001 - the connection is gone anyway
                log.debug("live topics not unsubscribed", exc_info=True)

    async def _read(self) -> None:
        while True:
            try:
                if not self.pubsub.subscribed:
                    if self.counts:  # lost while Redis was down: subscribe again
                        async with self._commands:
                            await self.pubsub.subscribe(*[self.prefix + t for t in self.counts])
                    else:
                        await asyncio.sleep(0.05)
                        continue
                msg = await self.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: wait, then reconnect
                log.warning("live events paused: redis unavailable (%s)", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            try:
                topic = msg["channel"].decode()[len(self.prefix):]
                await self.local.publish(topic, json.loads(msg["data"]))
            except Exception:  # noqa: BLE001 - one bad payload must not stop the others
                log.warning("live event not delivered", exc_info=True)


class RedisLiveEvents(LiveEvents):
    """Redis pub/sub, so a message handled by one worker reaches a console on another."""

    def __init__(self, url: str, prefix: str = "pcrm:live:") -> None:
        from bot.redisconn import async_client

        self._url = url
        self._redis = async_client(url)
        self._prefix = prefix
        self._hub: _Hub | None = None

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish; a Redis outage is logged, never raised (live events are best effort)."""
        try:
            await self._redis.publish(self._prefix + topic, json.dumps(payload, ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001
            log.warning("live event to %s lost: redis unavailable (%s)", topic, type(exc).__name__)

    def _hub_here(self) -> _Hub:
        """The hub of the running event loop (a new one if the loop changed, as in tests)."""
        if self._hub is None or self._hub.loop is not asyncio.get_running_loop():
            from bot.redisconn import async_client

            self._hub = _Hub(async_client(self._url), self._prefix)
        return self._hub

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        hub = self._hub_here()
        async with hub.local.subscribe(*topics) as stream:
            await hub.add(topics)
            try:
                yield stream
            finally:
                await hub.remove(topics)


def make_live_events(redis_url: str | None, prefix: str = "pcrm:") -> LiveEvents:
    """Redis pub/sub when ``REDIS_URL`` is set (events cross workers), else in-process queues."""
    return RedisLiveEvents(redis_url, prefix=prefix + "live:") if redis_url else InProcessLiveEvents()
