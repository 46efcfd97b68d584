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

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.settings import ROOT, Settings

STARTUP_TIMEOUT_S = 900  # the first start may train the model


@pytest.fixture(scope="session")
def live_server_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of the live server: a fresh SQLite file, the shared model cache, no Redis."""
    db = tmp_path_factory.mktemp("live-db") / "pcrm.db"
    return Settings(database_url=f"sqlite:///{db}", redis_url=None, pcrm_model_dir=ROOT / "var" / "model")


@dataclass
class LiveServer:
    """The running server: its URL, the app object and the event loop it runs on."""

    url: str
    app: Any
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (e.g. publish a live event) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="session")
def live_server_handle(live_server_settings: Settings) -> Iterator[LiveServer]:
    """The real app served by uvicorn in a background thread."""
    import uvicorn

    from bot.app import create_app

    app = create_app(live_server_settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    # Signals belong to pytest's main thread (newer uvicorn skips them off the main thread anyway).
    config.install_signal_handlers = False  # type: ignore[attr-defined]
    server.install_signal_handlers = lambda: None  # type: ignore[attr-defined,method-assign]
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            sock.close()
            pytest.fail("the live server thread died during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail(f"the live server did not start within {STARTUP_TIMEOUT_S}s")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app, loop=loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="session")
def live_server(live_server_handle: LiveServer) -> str:
    """Base URL (``http://127.0.0.1:<port>``) of the real app."""
    return live_server_handle.url
