"""The standalone action server's wiring (``python -m rasa_sdk --actions actions``).

rasa_sdk imports every module of the package when it registers the actions, so this one is
loaded there too and tells :mod:`actions.backend` to keep service requests in the SQL store of
``DATABASE_URL``, as the engine's in-process actions do. It is the only module of ``actions``
that imports the store: the actions sit with the engine, below the store, and reach requests
only through :class:`bot.service_requests.RequestStore` (``lint-imports`` checks both).
"""

from __future__ import annotations

from actions import backend
from bot.service_requests import InMemoryRequestStore, RequestStore
from bot.settings import Settings


def sql_requests(settings: Settings) -> RequestStore:
    """The SQL request store of ``settings.database_url`` (in memory without one)."""
    if not settings.database_url:
        return InMemoryRequestStore()
    from crm_store.db import make_session_factory
    from crm_store.requests import SqlRequestStore

    return SqlRequestStore(make_session_factory(settings.database_url))


backend.provide_requests(sql_requests)
