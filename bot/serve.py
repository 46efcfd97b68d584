"""``pcrm serve --workers N``: load once, then fork the workers, so they share the models.

Why not uvicorn's own ``--workers``: its supervisor *spawns* each worker as a fresh
interpreter, and each one loaded the NLU model, spaCy and the Kiwi analyser again (≈ 750 MB
each, ≈ 500 MB of it Kiwi's dictionaries). Here the supervisor process loads and warms the
engine (:func:`preload`) while a child it forked first runs the migrations and the knowledge
base's seed once (:class:`StorePrep`, on the other core), freezes the garbage collector's view of
that heap (``gc.freeze``: a collection in a worker never writes to those objects' headers,
so their pages stay shared) and then ``fork``\\ s N workers. Each worker builds its own app
(:func:`bot.app.create_app`) with its own database pool, Redis clients and threads — all made
after the fork, never inherited — around a copy of the preloaded engine
(:func:`engine_with`). Kiwi's and the models' memory is then shared copy-on-write; a worker
costs what it allocates itself (``bench/memory.py`` measures PSS).

The supervisor keeps N workers alive (a dead one is re-forked from the warm parent: no model
load), forwards SIGTERM/SIGINT, and stops if a worker fails during its start-up (a broken
configuration would fail the same way on every restart). It also owns the directory of
prometheus-client's multiprocess mode (:mod:`bot.metrics`): a temporary one unless
``PROMETHEUS_MULTIPROC_DIR`` is set, wiped at start and removed at exit.

Hook for whatever else the engine loads at start (a knowledge base, an embedding model):
load it in ``Engine`` (constructor or a property) and touch it in :func:`warm`, and it is
loaded once here and shared by every worker.

The supervisor starts with the garbage collector off (``bot.cli`` disables it for ``serve``):
the imports and the models make ≈ 260,000 tracked objects that all live until the end, and every
full collection on the way walked all made so far (≈ 0.3-0.4 of ≈ 3.5 CPU s). Before the fork it
freezes them without a collection (the ``gc`` module's advice for a pre-forking server: no freed
holes in pages the workers share) and turns the collector back on, so each worker collects what
it makes itself.

The start's phases (wall and CPU seconds) are logged at INFO and, with ``PCRM_STARTUP_REPORT``
set, appended to that file as JSON lines, with each worker's own start (``bench/startup.py``).
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.dialogue.state import StateStore
    from bot.engine import Engine
    from bot.service_requests import RequestStore
    from bot.settings import Settings

log = logging.getLogger("pcrm.serve")

#: The engine loaded before the fork (None outside ``pcrm serve --workers N``'s processes).
_PRELOADED: Engine | None = None
#: Database URLs already migrated by the supervisor: workers skip Alembic.
_MIGRATED: set[str] = set()
#: uvicorn's exit code for a worker that failed before serving.
STARTUP_FAILURE = 3
#: Seconds a stopping worker gets to finish its requests before SIGKILL.
GRACEFUL_S = 25.0
#: ``(perf_counter, process_time)`` when this worker was forked (None in the supervisor).
FORKED_AT: tuple[float, float] | None = None


def process_age_s() -> float:
    """Seconds since this process started (``/proc``; the interpreter's own start included)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # not Linux
        return 0.0


class StartupPhases:
    """Wall and CPU seconds of each phase of the supervisor's start, logged (INFO) when done and
    appended as a JSON line to ``PCRM_STARTUP_REPORT`` when set (``bench/startup.py`` reads it)."""

    def __init__(self) -> None:
        # the interpreter, the CLI and whatever it imported before serve() began
        self.rows: list[tuple[str, float, float]] = [("interpreter and CLI", process_age_s(), time.process_time())]
        self._t, self._c = time.perf_counter(), time.process_time()

    def mark(self, name: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.rows.append((name, t - self._t, c - self._c))
        self._t, self._c = t, c

    def report(self, role: str = "supervisor") -> None:
        wall, cpu = sum(r[1] for r in self.rows), sum(r[2] for r in self.rows)
        log.info("%s %d started in %.2f s (%.2f CPU s): %s", role, os.getpid(), wall, cpu,
                 ", ".join(f"{n} {w:.2f} s/{c:.2f} CPU" for n, w, c in self.rows))
        write_startup_report({"role": role, "pid": os.getpid(), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                              "phases": [[n, round(w, 3), round(c, 3)] for n, w, c in self.rows]})


def write_startup_report(row: dict[str, Any]) -> None:
    path = os.environ.get("PCRM_STARTUP_REPORT")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    except OSError:  # a measurement aid only
        log.warning("start-up report not written to %s", path, exc_info=True)


def warm(engine: Engine, mark: Callable[[str], None] = lambda _name: None) -> None:
    """Load and exercise everything a turn uses, so it is in memory before the fork."""
    _ = engine.nlu
    mark("NLU model loaded")
    engine.parse("쓰레기 언제 버려요? warm-up")
    mark("first parse (Kiwi builds its analyser)")
    _ = engine.executor
    engine.rasa_sdk()
    mark("actions")
    if hasattr(type(engine), "kb"):  # the knowledge base and its embedding model (loaded on first use)
        from bot.kb.index_cache import built_apart

        with built_apart():  # an index not built by `pcrm train` is built by a child, then mapped
            kb = engine.kb
        mark("knowledge base")
        # e5 and its vector memo (≈ 0.1 CPU s) here, shared, not in each worker on its first
        # question (≈ 35-50 MB of private memory each)
        embedder = getattr(kb, "embedder", None)
        if embedder is not None and hasattr(embedder, "embed_query"):
            embedder.embed_query("쓰레기 언제 버려요")
            mark("knowledge base: embedding model")
    for hook in ("warm_up", "warm"):  # an engine that loads more at start names it so
        fn = getattr(engine, hook, None)
        if callable(fn):
            fn()
            mark(hook)


def preload(settings: Settings, mark: Callable[[str], None] = lambda _name: None) -> Engine:
    """Build and warm the engine (with in-memory stores: each worker puts its own in) and import
    the web app's modules, in the supervisor."""
    global _PRELOADED
    from bot import app as _app  # noqa: F401 - FastAPI, the routers and their imports, shared too
    from bot.engine import Engine

    for name in ("channels.rest", "channels.webchat", "channels.twilio_sms", "channels.twilio_voice",
                 "channels.telegram", "channels.kakao"):
        try:
            __import__(name)
        except ImportError:  # pragma: no cover - an optional channel's package is missing
            pass
    if settings.telegram_bot_token:  # its library is imported on use: here, once, shared by the workers
        try:
            import telegram.error  # noqa: F401
            import telegram.request  # noqa: F401
        except ImportError:  # pragma: no cover - python-telegram-bot not installed
            pass
    mark("web app imported")
    engine = Engine(settings=settings)
    mark("engine built")
    warm(engine, mark)
    _PRELOADED = engine
    return engine


def engine_with(settings: Settings, states: StateStore, requests: RequestStore) -> Engine:
    """The engine of a worker: the preloaded one (its models shared) with this worker's stores,
    or a new one when nothing was preloaded for these settings (tests, ``pcrm serve`` alone)."""
    from bot.engine import Engine

    base = _PRELOADED
    if base is None or base.settings != settings:
        return Engine(settings=settings, states=states, requests=requests)
    engine = copy.copy(base)  # shares NLU, knowledge, actions; the stores are this worker's
    engine.states, engine.requests = states, requests
    return engine


def migrate(url: str) -> None:
    """``alembic upgrade head`` unless the supervisor already did it for ``url`` before the fork."""
    from crm_store.db import upgrade

    if url not in _MIGRATED:
        upgrade(url)
        _MIGRATED.add(url)


def seed_knowledge(settings: Settings, url: str) -> None:
    """Import the seed knowledge base into an empty store once, in the supervisor.

    Every worker's start would otherwise find the store empty at the same moment, and each
    would parse the 300-odd seed articles and write them (seconds of CPU, while the first
    residents are already being answered), all but one losing the race at commit.
    """
    from bot.kb.sync import KbSync
    from crm_store.db import make_session_factory

    seed = getattr(settings, "pcrm_kb_dir", None) or settings.pcrm_nlu_dir / "knowledge"
    sessions = make_session_factory(url)
    try:
        KbSync(sessions, lambda _a, _r: None, seed_dir=seed, config=settings.config()).import_seed_if_empty()
    except Exception:  # noqa: BLE001 - each worker tries again at its start, as without this
        log.warning("knowledge base seed not imported by the supervisor", exc_info=True)
    finally:
        sessions.kw["bind"].dispose()


class StorePrep:
    """The store's preparation (:func:`migrate`, :func:`seed_knowledge`) in a forked child process,
    while the supervisor imports the web app and loads the models.

    Neither needs the other: the first message waits for the models (≈ 5 CPU s), the migrations
    of a fresh database and the knowledge-base seed (≈ 2 CPU s: 300-odd articles parsed and
    written) only have to be done before a worker opens the store. On a machine with two cores
    they now cost no wall time. The child is forked before any thread exists and leaves with
    ``os._exit`` (none of the supervisor's clean-ups run twice). :meth:`wait` is called before
    the fork of the workers; a failed child is redone here, so its error stops the start as it
    did in-process.
    """

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings, self.url = settings, url
        self.pid: int | None = None
        if url in _MIGRATED:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (its work is checked by the parent's wait)
            code = 1
            try:
                migrate(url)
                seed_knowledge(settings, url)
                code = 0
            except BaseException:  # noqa: BLE001 - redone in the parent, which reports it
                log.warning("store preparation failed in the child; the supervisor retries", exc_info=True)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid

    def abandon(self) -> None:
        """Stop the child (the start failed elsewhere) and reap it."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None

    def wait(self) -> None:
        """Block until the store is ready (redoing the work here if the child failed)."""
        if self.pid is not None:
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            if os.waitstatus_to_exitcode(status) == 0:
                _MIGRATED.add(self.url)
                return
        migrate(self.url)  # raises what went wrong
        seed_knowledge(self.settings, self.url)


def _metrics_dir() -> tuple[Path, bool]:
    """prometheus-client's multiprocess directory, set in the environment before it is imported:
    the operator's (wiped), else a new temporary one (removed at exit). ``(path, ours)``."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for f in path.glob("*.db"):  # counters of a previous run would be summed into this one's
            f.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="pcrm-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def serve(host: str, port: int, workers: int, log_level: str, log_config: Any = None) -> int:
    """Run the web app: in this process for one worker, else pre-forked workers (see module doc)."""
    import uvicorn

    from bot.security_headers import UVICORN_LIMITS  # e.g. WebSocket frames over 64 KiB refused unread
    from bot.settings import get_settings

    kw: dict[str, Any] = {"log_level": log_level, **UVICORN_LIMITS,
                          # the real client address behind the HTTPS proxy (lockouts count by it)
                          "forwarded_allow_ips": get_settings().pcrm_trusted_proxies}
    if log_config is not None:
        kw["log_config"] = log_config
    if workers <= 1:
        from bot.app import create_app

        app = create_app()
        gc.enable()  # paused by the CLI for the start (see the module doc); the app's lifespan freezes
        uvicorn.run(app, host=host, port=port, **kw)
        return 0

    metrics_dir, ours = _metrics_dir()
    try:
        phases = StartupPhases()
        config = uvicorn.Config("bot.app:create_app", factory=True, host=host, port=port, workers=workers, **kw)
        settings = get_settings()
        from crm_store.db import resolve_url

        url = resolve_url(settings.database_url)
        phases.mark("settings")
        # what both the store's preparation and the web app import, imported once before the fork
        import bot.kb.sync  # noqa: F401
        import crm_store.kb  # noqa: F401
        import crm_store.models  # noqa: F401

        phases.mark("store modules imported")
        store = StorePrep(settings, url)  # migrations and the KB seed, in a child, beside the loading
        phases.mark("store preparation forked")
        try:
            preload(settings, phases.mark)
        except BaseException:
            store.abandon()
            raise
        store.wait()
        phases.mark("waiting for the migrations and the knowledge-base seed")
        # Everything alive now is never scanned again, so its pages stay shared. No collection
        # first (as the gc module's documentation advises for a pre-forking server): it would walk
        # ≈ 260,000 objects for ≈ 0.1 CPU s to free ≈ 2,000 (no measurable memory), and leave
        # freed holes in shared pages for the workers' allocations to dirty.
        gc.freeze()
        gc.enable()  # paused since the CLI began (module doc); the workers collect their own garbage
        phases.mark("gc.freeze")
        phases.report()
        log.info("supervisor %d: forking %d workers", os.getpid(), workers)
        sock = config.bind_socket()
        return Supervisor(config, sock, workers).run()
    finally:
        if ours:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    """Keeps ``n`` forked workers serving ``sock``."""

    def __init__(self, config: Any, sock: Any, n: int) -> None:
        self.config, self.sock, self.n = config, sock, n
        self.workers: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.failed = False

    def _fork(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            global FORKED_AT
            FORKED_AT = (time.perf_counter(), time.process_time())
            code, server = STARTUP_FAILURE, None
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                import uvicorn

                server = uvicorn.Server(self.config)
                server.run(sockets=[self.sock])
            except BaseException:  # noqa: BLE001 - logged; the exit code tells the supervisor
                log.exception("worker %d crashed", os.getpid())
            finally:
                # Never served: the app (or its configuration) is broken; restarting would loop.
                if server is not None and server.started:
                    code = 0
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.workers[pid] = time.monotonic()
        log.info("started worker %d", pid)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            if self.workers.pop(pid, None) is None:
                continue
            _mark_dead(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if code == STARTUP_FAILURE:
                log.error("worker %d failed to start; stopping", pid)
                self.failed = self.stopping = True
                continue
            log.warning("worker %d exited (%s); starting another", pid, code)

    def _signal(self, sig: int, _frame: Any) -> None:
        if not self.stopping:
            log.info("received %s; stopping the workers", signal.Signals(sig).name)
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        log.info("supervisor %d serving http://%s:%d", os.getpid(), self.config.host, self.config.port)
        while not self.stopping:
            while len(self.workers) < self.n and not self.stopping:
                self._fork()
            time.sleep(0.05)  # a dead worker is replaced within 50 ms (the loop costs nothing measurable)
            self._reap()
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACEFUL_S
        while self.workers and time.monotonic() < deadline:
            time.sleep(0.1)
            self._reap()
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.sock.close()
        return 1 if self.failed else 0


def _mark_dead(pid: int) -> None:
    """Tell prometheus-client a worker is gone (its live gauges are dropped)."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:  # noqa: BLE001 - metrics are never worth a supervisor crash
        pass
