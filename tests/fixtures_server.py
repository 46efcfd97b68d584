"""A real server for end-to-end tests (registered from ``conftest.py``).

``live_server``: the whole app (``bot.app.create_app``) under uvicorn on 127.0.0.1,
on a free port, in a background thread, with a temporary SQLite database; yields the
base URL (``http://127.0.0.1:<port>``).  The NLU model is cached in ``var/model`` of
the repository, so it is trained once per change of the training data, not per run.

``live_server_handle``: the same server as a :class:`LiveServer` (app object, and
``call()`` to run a coroutine on the server's event loop, e.g. to publish a live event).

``live_server_settings``: the :class:`bot.settings.Settings` it runs with (its
``database_url`` lets a test look at what was stored).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.settings import ROOT, Settings
from tests.channel_servers import ServerThread


@pytest.fixture(scope="session")
def live_server_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the live server: a fresh SQLite file, the shared model cache, no Redis."""
    db = tmp_path_factory.mktemp("live-db") / "pcrm.db"
    return Settings(database_url=f"sqlite:///{db}", redis_url=None, pcrm_model_dir=ROOT / "var" / "model")


#: The running server: ``url``, ``app``, ``loop`` and ``call(coro)`` (see tests/channel_servers.py).
LiveServer = ServerThread


@pytest.fixture(scope="session")
def live_server_handle(live_server_settings: Settings) -> Iterator[LiveServer]:
    """The real app served by uvicorn in a background thread."""
    from bot.app import create_app

    server = ServerThread(create_app(live_server_settings)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def live_server(live_server_handle: LiveServer) -> str:
    """Base URL (``http://127.0.0.1:<port>``) of the real app."""
    return live_server_handle.url
