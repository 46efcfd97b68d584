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
