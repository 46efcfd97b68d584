"""Keeping every worker's knowledge base equal to the published articles in the store.

Staff publish in the console; residents talking to *any* worker must get the new answer
within a minute, without a restart or a deploy.  Each worker therefore:

* at start (:meth:`KbSync.bootstrap`): imports the seed ``nlu_data/knowledge/*.yml`` if the
  store has no article yet (a fresh ``make run`` works), otherwise the store wins; then loads
  the published articles;
* polls ``kb_state.revision`` every :attr:`interval_s` seconds (one primary-key read) and,
  when it moved, reloads the published articles and hands them to the engine
  (``KnowledgeBase.replace``);
* reloads at once on a ``kb`` live event: the console publishes one after every publish or
  rollback, so with ``REDIS_URL`` every worker reacts immediately and without it the worker
  that served the console does (the others by polling).

A reload rebuilds the retrieval index in a worker thread while the old index keeps answering
(``KnowledgeBase.replace`` swaps it in at once when done).

A published article the engine's schema refuses is left out (and logged) rather than taking
the whole knowledge base down: the store's own checks make that rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from bot.kb.articles import Article, ArticleError, Placeholders, parse_file
from crm_store import kb as kb_store

log = logging.getLogger("pcrm.kb.sync")

#: Live-event topic announcing a new revision (payload ``{"revision": N}``).
TOPIC = "kb"
DEFAULT_INTERVAL_S = 15.0

Apply = Callable[[list[Article], int], None]


def engine_target(engine: Any) -> Apply:
    """How the published articles reach the dialogue engine: its ``KnowledgeBase.replace``.

    The engine keeps the knowledge base as ``engine.kb`` (the retrieval engine of
    ``bot/kb/retrieval.py``); an engine without one (an older build, a test double) is
    left alone.
    """
    warned = False

    def apply(articles: list[Article], revision: int) -> None:
        nonlocal warned
        target = getattr(engine, "kb", None)
        if target is None or not hasattr(target, "replace"):
            if not warned:
                log.warning("the engine has no knowledge base to replace; published articles not served")
                warned = True
            return
        current = getattr(target, "articles", None)
        if isinstance(current, list) and _same_articles(current, articles):
            return  # e.g. the first start: the store holds exactly the seed the engine indexed
        target.replace(articles)

    return apply


def _same_articles(a: list[Article], b: list[Article]) -> bool:
    """Whether two article sets say the same (rebuilding the index costs seconds of CPU)."""
    def key(items: list[Article]) -> list[dict[str, Any]]:
        return sorted((x.to_dict() for x in items), key=lambda d: d["id"])

    return len(a) == len(b) and key(a) == key(b)


def seed_articles(seed_dir: Path, config: dict[str, Any] | None) -> tuple[list[tuple[str, dict[str, Any]]],
                                                                           list[str]]:
    """``(area, article dict)`` of every valid seed article, and the problems of the others.

    Lenient on purpose: a typo in one of 300 seed articles must not keep the app from starting;
    ``pcrm kb import`` is the strict path that refuses the whole seed.
    """
    items: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    placeholders = Placeholders(config) if config is not None else None
    seen: set[str] = set()
    for path in sorted(Path(seed_dir).glob("*.yml")):
        articles, bad = parse_file(path)
        problems += bad
        for a in articles:
            own = placeholders.check(a) if placeholders is not None else []
            if own or a.id in seen:
                problems += own or [f"{path.name}: {a.id}: duplicate id"]
                continue
            seen.add(a.id)
            items.append((a.area or path.stem, a.to_dict()))
    return items, problems


class KbSync:
    """This worker's copy of the published knowledge base (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], apply: Apply, *, seed_dir: Path | None = None,
                 config: dict[str, Any] | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 live: Any = None) -> None:
        self.sessions = sessions
        self.apply = apply
        self.seed_dir = seed_dir
        self.config = config
        self.interval_s = interval_s
        self.live = live
        #: The revision loaded last (``None`` before the first load).
        self.revision: int | None = None
        #: The articles loaded last (the console previews and lists them).
        self.articles: list[Article] = []
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None

    # -- start ---------------------------------------------------------------------------------

    def import_seed_if_empty(self) -> kb_store.ImportResult | None:
        """Import the seed when the store holds no article; ``None`` when it had some (the DB wins)."""
        if self.seed_dir is None or not Path(self.seed_dir).is_dir():
            return None
        with self.sessions() as s:
            if not kb_store.is_empty(s):
                return None
        items, problems = seed_articles(self.seed_dir, self.config)
        for p in problems:
            log.warning("seed article left out: %s", p)
        if not items:
            return None
        try:
            with self.sessions.begin() as s:
                if not kb_store.is_empty(s):
                    return None
                result = kb_store.import_articles(s, items, who="seed")
        except IntegrityError:  # another worker imported it at the same moment
            log.info("seed imported by another worker")
            return None
        log.info("knowledge base seeded from %s: %s", self.seed_dir, result)
        return result

    def bootstrap(self) -> int:
        """Seed if empty, then load the published articles; returns the revision loaded."""
        self.import_seed_if_empty()
        self.refresh(force=True)
        return self.revision or 0

    # -- reloading -------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Reload when the store's revision differs from the one loaded; whether it reloaded."""
        with self._lock:
            with self.sessions() as s:
                current = kb_store.revision(s)
                if not force and current == self.revision:
                    return False
                revision, docs = kb_store.published_articles(s)
            articles: list[Article] = []
            for doc in docs:
                try:
                    articles.append(Article.from_dict(doc))
                except ArticleError as exc:
                    log.error("published article %s left out: %s", doc.get("id"), exc)
            self.apply(articles, revision)
            self.articles = articles
            self.revision = revision
            log.info("knowledge base revision %d loaded (%d articles)", revision, len(articles))
            return True

    def wake(self) -> None:
        """Make :meth:`run` check the revision now (from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def announce(self, revision: int) -> None:
        """Tell every worker (live event) that ``revision`` is published, this one included.

        The reload itself runs in the background poller: rebuilding a few hundred articles'
        index takes seconds, and the editor who clicked "publish" should not wait for it (the
        console shows which revision this worker serves).  Without a running poller (a
        script, a test without lifespan) it reloads here.
        """
        if self._wake is None:
            await run_in_threadpool(self.refresh)
        else:
            self.wake()
        if self.live is not None:
            await self.live.publish(TOPIC, {"revision": revision})

    async def _listen(self) -> None:
        if self.live is None:
            return
        while True:
            try:
                async with self.live.subscribe(TOPIC) as stream:
                    async for _topic, _payload in stream:
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - polling still runs; resubscribe after a pause
                log.debug("kb live subscription lost", exc_info=True)
                await asyncio.sleep(self.interval_s)

    async def run(self) -> None:
        """Poll forever (cancel to stop): every ``interval_s`` seconds, or at once when woken."""
        self._wake = asyncio.Event()
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
                self._wake.clear()
                try:
                    await run_in_threadpool(self.refresh)
                except Exception:  # noqa: BLE001 - the database may be down; keep serving what we have
                    log.warning("knowledge base refresh failed", exc_info=True)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
