"""Where actions find the stores and the knowledge they need.

In-process, the engine calls :func:`configure` with its own objects. Behind a
standalone rasa_sdk action server nobody does, so the first use builds them from
the environment: the knowledge and knowledge base from the settings, the request store
from the factory :mod:`actions.standalone` registers (``DATABASE_URL`` → the SQL store),
else in memory. The actions themselves depend only on :class:`RequestStore`; the one
module that knows the store exists is that wiring (``lint-imports`` keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.knowledge import Knowledge
from bot.service_requests import InMemoryRequestStore, RequestStore

if TYPE_CHECKING:
    from bot.kb.retrieval import KnowledgeBase
    from bot.settings import Settings


@dataclass
class Backend:
    knowledge: Knowledge
    requests: RequestStore
    #: The knowledge base ``action_answer_faq`` answers from (None: the responses' utter_faq_*).
    kb: KnowledgeBase | None = None


_backend: Backend | None = None
#: The request store of a standalone action server (set by :mod:`actions.standalone`).
_requests_factory: Callable[[Settings], RequestStore] | None = None


def provide_requests(factory: Callable[[Settings], RequestStore]) -> None:
    """Say how a standalone action server gets its request store (from its settings)."""
    global _requests_factory
    _requests_factory = factory


def configure(knowledge: Knowledge, requests: RequestStore, kb: KnowledgeBase | None = None) -> None:
    """Give the actions the engine's knowledge, request store and knowledge base (called before
    every in-process action)."""
    global _backend
    if _backend is None or _backend.knowledge is not knowledge or _backend.requests is not requests \
            or _backend.kb is not kb:
        _backend = Backend(knowledge, requests, kb)


def get() -> Backend:
    """The configured backend, building one from the environment if needed."""
    global _backend
    if _backend is None:
        from bot.settings import get_settings

        settings = get_settings()
        knowledge = Knowledge(settings.pcrm_nlu_dir, settings.config())
        requests = _requests_factory(settings) if _requests_factory is not None else InMemoryRequestStore()
        from bot.kb.retrieval import shared_knowledge_base

        kb = shared_knowledge_base(settings.pcrm_kb_dir or settings.pcrm_nlu_dir / "knowledge", settings.config(),
                                   cache_dir=settings.pcrm_model_dir, nlu_dir=settings.pcrm_nlu_dir)
        _backend = Backend(knowledge, requests, kb)
    return _backend
