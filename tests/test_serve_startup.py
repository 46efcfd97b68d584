"""``pcrm serve --workers N``'s start: the store prepared in a child beside the loading, the phases reported.

The supervisor forks a child for the migrations and the knowledge-base seed (bot/serve.py
``StorePrep``) while it imports the web app and loads the models; the workers are forked only
after that child has finished, so they find the schema at head and the articles stored, and a
child that failed is redone in the supervisor, whose error then stops the start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import inspect

from bot import serve
from bot.settings import get_settings
from crm_store import kb as store_kb
from crm_store.db import make_session_factory, resolve_url


@pytest.fixture()
def fresh_url(tmp_path: Path):
    url = resolve_url(f"sqlite:///{tmp_path / 'pcrm.db'}")
    yield url
    serve._MIGRATED.discard(url)


def test_the_store_is_migrated_and_seeded_by_a_child(fresh_url: str) -> None:
    prep = serve.StorePrep(get_settings(), fresh_url)
    assert prep.pid is not None and prep.pid != os.getpid()  # the work happens in another process
    prep.wait()
    assert fresh_url in serve._MIGRATED  # the workers skip Alembic
    sessions = make_session_factory(fresh_url)
    try:
        bind = sessions.kw["bind"]
        tables = set(inspect(bind).get_table_names())
        assert {"alembic_version", "conversations", "interactions"} <= tables
        with sessions() as s:
            assert not store_kb.is_empty(s), "the seed articles were not imported"
    finally:
        sessions.kw["bind"].dispose()
    again = serve.StorePrep(get_settings(), fresh_url)  # already done in this process: no child
    assert again.pid is None
    again.wait()


def test_a_store_that_cannot_be_prepared_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    url = resolve_url(f"sqlite:///{blocker / 'pcrm.db'}")  # the file's parent is a file: no database there
    prep = serve.StorePrep(get_settings(), url)
    assert prep.pid is not None
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever SQLAlchemy/Alembic raise, the start stops
        prep.wait()
    assert url not in serve._MIGRATED


def test_the_phases_are_reported_where_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "startup.jsonl"
    monkeypatch.setenv("PCRM_STARTUP_REPORT", str(report))
    phases = serve.StartupPhases()
    sum(range(100_000))
    phases.mark("work")
    phases.report()
    row = json.loads(report.read_text())
    assert row["role"] == "supervisor" and row["pid"] == os.getpid()
    assert [p[0] for p in row["phases"]] == ["interpreter and CLI", "work"]
    assert row["phases"][0][1] > 0  # this process has been running for a while
    assert row["wall_s"] >= row["phases"][1][1] >= 0 and row["cpu_s"] >= 0


def test_an_abandoned_store_preparation_leaves_no_child(fresh_url: str) -> None:
    """A start that fails while the child works (a broken model, a bad config) stops the child too."""
    prep = serve.StorePrep(get_settings(), fresh_url)
    pid = prep.pid
    assert pid is not None
    prep.abandon()
    assert prep.pid is None
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_the_start_runs_without_the_gc_and_the_workers_get_it_back(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``pcrm serve`` pauses the garbage collector while it imports and loads (nothing it makes
    is garbage; each full collection walked every object made so far), then collects once,
    freezes and re-enables it before the first worker is forked."""
    import gc

    from bot import cli

    seen: dict[str, object] = {}

    class NoStorePrep:
        def __init__(self, *_a: object) -> None:
            pass

        def wait(self) -> None:
            pass

        def abandon(self) -> None:
            pass

    class NoWorkers:
        def __init__(self, _config: object, sock: object, _n: int) -> None:
            self.sock = sock

        def run(self) -> int:
            seen["at the fork"] = gc.isenabled()
            seen["frozen"] = gc.get_freeze_count() > 0
            self.sock.close()  # type: ignore[attr-defined]
            return 0

    monkeypatch.setattr(serve, "StorePrep", NoStorePrep)
    monkeypatch.setattr(serve, "preload", lambda _s, _mark: seen.setdefault("while loading", gc.isenabled()))
    monkeypatch.setattr(serve, "Supervisor", NoWorkers)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    try:
        assert cli.main(["serve", "--workers", "2", "--port", "0", "--log-level", "warning"]) == 0
    finally:
        gc.unfreeze()
    assert seen == {"while loading": False, "at the fork": True, "frozen": True}
    assert gc.isenabled()


def _fresh_process(code: str, tmp_path: Path) -> str:
    """The last line ``code`` prints in a new interpreter without ``REDIS_URL``, on a SQLite file
    of its own: what a start imports can only be seen in a process nothing else has run in."""
    import subprocess
    import sys

    from bot.settings import ROOT

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=f"sqlite:///{tmp_path / 'pcrm.db'}",
               PCRM_SPOOL_PATH=str(tmp_path / "spool.jsonl"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_redis_is_not_imported_without_redis_url(tmp_path: Path) -> None:
    """Without ``REDIS_URL`` nothing imports redis-py (≈ 0.1 CPU s: its client and, in redis-py 8,
    the OpenTelemetry SDK); ``REDIS_DOWN`` still names its exception classes, the very ones a
    client made later raises."""
    code = """
import os, socket, sys
import bot.app, bot.serve, bot.admission, bot.ratelimit
from bot.app import create_app
create_app()
assert "redis" not in sys.modules, "redis imported"
from bot.redisconn import REDIS_DOWN, sync_client
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]  # nothing listens there
try:
    sync_client(f"redis://127.0.0.1:{port}/0").ping()
except REDIS_DOWN as exc:
    import redis
    assert isinstance(exc, redis.exceptions.ConnectionError) and redis.RedisError in REDIS_DOWN
    print("caught", type(exc).__name__)
"""
    assert _fresh_process(code, tmp_path) == "caught ConnectionError"


def test_the_staff_routers_are_imported_on_their_first_request(tmp_path: Path) -> None:
    """The console's, the supervisor's, the field app's and the public pages' routers are not
    imported by the start (≈ 0.1-0.2 CPU s before the first answer); a resident's message does
    not import them either, the first request for one of their pages does, and the OpenAPI
    document lists their routes whenever it is first built."""
    code = """
import sys, warnings
warnings.simplefilter("ignore")
from fastapi.testclient import TestClient
from bot.app import create_app
STAFF = ("bot.console.routes", "bot.console.kb_routes", "bot.field", "bot.open311", "bot.supervisor")
app = create_app()
assert not any(m in sys.modules for m in STAFF), [m for m in STAFF if m in sys.modules]
with TestClient(app) as c:
    r = c.post("/webhooks/rest/webhook", json={"sender": "lazy-1", "message": "안녕하세요"})
    assert r.status_code == 200 and r.json(), r.text
    assert not any(m in sys.modules for m in STAFF)
    assert c.get("/console/login").status_code == 200
    assert all(m in sys.modules for m in STAFF)
    assert c.get("/open311/v2/services.json").status_code == 200
paths = create_app().openapi()["paths"]  # a new app: its document built before any request
assert any(p.startswith("/open311/") for p in paths) and any(p.startswith("/console/") for p in paths)
print("ok")
"""
    assert _fresh_process(code, tmp_path) == "ok"
