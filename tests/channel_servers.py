"""Real HTTP servers on 127.0.0.1 for tests: uvicorn in a thread.

``ServerThread(app)`` serves any ASGI app on a free loopback port; ``call(coro)``
runs a coroutine on the server's own event loop (where the app's HTTP clients
live), as code inside the app would. ``console_client(server, who)`` is an HTTP client
logged in to the console as ``who`` (username, password).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


class ServerThread:
    """One ASGI app under uvicorn on a free loopback port, in a daemon thread.

    The port is bound at construction, so ``url`` is known before the app exists
    (apps that sign or build links need their public URL): ``ServerThread()``
    then ``start(app)`` works as well as ``ServerThread(app).start()``.
    """

    def __init__(self, app: Any = None, startup_timeout: float = 900.0) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._timeout = startup_timeout  # the first start may train the NLU model

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        assert self.server is not None
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def start(self, app: Any = None) -> ServerThread:
        self.app = app if app is not None else self.app
        from bot.security_headers import UVICORN_LIMITS  # as `pcrm serve` runs it

        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="auto",
                                                    timeout_graceful_shutdown=3, **UVICORN_LIMITS))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # pytest owns signals
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server at {self.url} did not start")
            time.sleep(0.05)
        return self

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()


@contextmanager
def console_client(server: ServerThread, who: tuple[str, str], timeout: float = 60) -> Iterator[httpx.Client]:
    """An HTTP client logged in to ``server``'s console as ``who`` (its CSRF cookie passed on)."""
    with httpx.Client(base_url=server.url, timeout=timeout, follow_redirects=True) as c:
        c.get("/console/login")
        r = c.post("/console/login", data={"username": who[0], "password": who[1],
                                           "csrf_token": c.cookies["pcrm_csrf"]})
        assert r.status_code == 200, r.text
        yield c
