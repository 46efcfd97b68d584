"""Where actions find the stores and the knowledge they need.

In-process, the engine calls :func:`configure` with its own objects. Behind a
standalone rasa_sdk action server nobody does, so the first use builds them from
the environment (``DATABASE_URL`` → the SQL store, else in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.knowledge import Knowledge
from bot.service_requests import InMemoryRequestStore, RequestStore


@dataclass
class Backend:
    knowledge: Knowledge
    requests: RequestStore


_backend: Backend | None = None


def configure(knowledge: Knowledge, requests: RequestStore) -> None:
    """Give the actions the engine's knowledge and request store (called before every in-process action)."""
    global _backend
    if _backend is None or _backend.knowledge is not knowledge or _backend.requests is not requests:
        _backend = Backend(knowledge, requests)


def get() -> Backend:
    """The configured backend, building one from the environment if needed."""
    global _backend
    if _backend is None:
        from bot.settings import get_settings

        settings = get_settings()
        knowledge = Knowledge(settings.pcrm_nlu_dir, settings.config())
        requests: RequestStore
        if settings.database_url:
            from crm_store.db import make_session_factory
            from crm_store.requests import SqlRequestStore

            requests = SqlRequestStore(make_session_factory(settings.database_url))
        else:
            requests = InMemoryRequestStore()
        _backend = Backend(knowledge, requests)
    return _backend
