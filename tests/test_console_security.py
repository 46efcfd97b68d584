"""Console authentication under attack: lockouts, server-side sessions, audit, password policy, Basic.

Each test names the finding it closes (issue 18); each fails on the code before the fix.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.console import auth, passwords
from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from crm_store.models import AuditLog, ConsoleSession
from crm_store.timeutil import utcnow

PASSWORD = "correct-horse-battery"


@pytest.fixture
def app(tmp_path: Any) -> Any:
    from bot.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'pcrm.db'}", redis_url=None,
                              pcrm_model_dir=ROOT / "var" / "model", pcrm_secret_key="test-secret-key"))
    create_agent(app.state.sessions, "waste1", PASSWORD, "agent", ["waste"])
    create_agent(app.state.sessions, "boss1", PASSWORD, "supervisor", [])
    return app


def _client(app: Any, ip: str = "127.0.0.1") -> TestClient:
    return TestClient(app, client=(ip, 50000))


def attempt(client: TestClient, username: str, password: str) -> Any:
    client.get("/console/login")
    return client.post("/console/login", data={"username": username, "password": password,
                                               "csrf_token": client.cookies["pcrm_csrf"], "next": "/console"},
                       follow_redirects=False)


def test_repeated_wrong_passwords_lock_the_account_even_for_the_right_password(app: Any) -> None:
    """40 wrong passwords, then the right one worked."""
    c = _client(app)
    assert [attempt(c, "waste1", f"wrong-password-{i}").status_code for i in range(5)] == [401] * 5
    locked = attempt(c, "waste1", PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "pcrm_console" not in c.cookies
    # Another account from another address is not affected.
    assert attempt(_client(app, "127.0.0.2"), "boss1", PASSWORD).status_code == 303


def test_one_address_guessing_many_accounts_is_locked_out(app: Any) -> None:
    c = _client(app, "10.0.0.9")
    codes = [attempt(c, f"nobody{i}", "wrong-password-x").status_code for i in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    assert attempt(c, "waste1", PASSWORD).status_code == 429


def test_failed_logins_are_audited(app: Any) -> None:
    c = _client(app, "10.1.2.3")
    attempt(c, "waste1", "wrong-password-1")
    with app.state.sessions() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "console.login_failed")).all()
    assert [(r.who, r.target) for r in rows] == [("waste1", "client:10.1.2.3")]
    assert PASSWORD not in repr([(r.who, r.action, r.target) for r in rows])


def test_a_captured_cookie_is_refused_after_logout(app: Any) -> None:
    """Logout did not end the session: the 12-hour stateless token kept working."""
    c = _client(app)
    assert attempt(c, "waste1", PASSWORD).status_code == 303
    captured = c.cookies["pcrm_console"]
    assert c.get("/console/api/me").status_code == 200
    assert c.post("/console/logout", data={"csrf_token": c.cookies["pcrm_csrf"]},
                  follow_redirects=False).status_code == 303
    thief = _client(app, "10.9.9.9")
    thief.cookies.set("pcrm_console", captured, path="/")
    assert thief.get("/console/api/me").status_code == 401


def test_an_idle_session_ends_and_sessions_are_listed_per_user(app: Any) -> None:
    c = _client(app)
    attempt(c, "waste1", PASSWORD)
    with app.state.sessions.begin() as s:
        rows = s.scalars(select(ConsoleSession)).all()
        assert len(rows) == 1 and rows[0].client == "127.0.0.1" and rows[0].ended_at is None
        rows[0].last_seen_at = utcnow() - timedelta(seconds=auth.IDLE_TIMEOUT_S + 5)
    assert c.get("/console/api/me").status_code == 401


def test_password_change_and_deactivation_end_every_session(app: Any, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    monkeypatch.setenv("DATABASE_URL", str(app.state.sessions.kw["bind"].url))
    c1, c2 = _client(app), _client(app, "127.0.0.3")
    attempt(c1, "waste1", PASSWORD)
    attempt(c2, "waste1", PASSWORD)
    assert main(["users", "sessions", "waste1", "--json"]) == 0
    assert capsys.readouterr().out.count('"username": "waste1"') == 2
    assert main(["users", "passwd", "waste1", "--password", "12345678"]) == 1  # policy
    assert main(["users", "passwd", "waste1", "--password", "a-new-long-passphrase"]) == 0
    assert c1.get("/console/api/me").status_code == 401 and c2.get("/console/api/me").status_code == 401
    assert attempt(c1, "waste1", "a-new-long-passphrase").status_code == 303
    assert main(["users", "disable", "waste1"]) == 0
    assert c1.get("/console/api/me").status_code == 401
    assert main(["users", "list", "--json"]) == 0
    assert '"active": false' in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["12345678", "short-pw", "password1234", "qwer1234!@#$", "aaaaaaaaaaaaaa",
                                 "waste1-is-me-ok"])
def test_weak_passwords_are_refused(app: Any, bad: str) -> None:
    """Passwords of 8 characters such as 12345678 were accepted."""
    with pytest.raises(ValueError):
        create_agent(app.state.sessions, "waste1x" if "waste1" not in bad else "waste1-is", bad)


def test_a_long_uncommon_passphrase_is_accepted() -> None:
    passwords.check_policy("봄날 한빛구청 민원실 커피", "kim")
    passwords.check_policy("correct horse battery staple", "kim")


def test_basic_auth_is_refused_outside_the_allow_list_without_hashing(app: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP Basic on /supervisor ran argon2 for every anonymous request (a CPU flood)."""
    calls = []
    monkeypatch.setattr(auth, "authenticate", lambda *a: calls.append(a))
    r = _client(app, "203.0.113.7").get("/supervisor/kpis.json", auth=("boss1", PASSWORD))
    assert r.status_code == 401 and calls == []


def test_basic_auth_from_the_allow_list_is_throttled(tmp_path: Any) -> None:
    from bot.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}", redis_url=None,
                              pcrm_model_dir=ROOT / "var" / "model", pcrm_supervisor_basic_allow="127.0.0.0/8"))
    create_agent(app.state.sessions, "boss1", PASSWORD, "supervisor", [])
    c = _client(app)
    assert c.get("/supervisor/kpis.json", auth=("boss1", PASSWORD)).status_code == 200
    assert [c.get("/supervisor/kpis.json", auth=("boss1", "nope-nope-nope")).status_code for _ in range(5)] == [401] * 5
    assert c.get("/supervisor/kpis.json", auth=("boss1", PASSWORD)).status_code == 429


def test_password_hashing_runs_on_a_bounded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``SLOTS`` argon2 computations at once, however many logins arrive."""
    active, peak, lock = 0, 0, threading.Lock()

    class SlowHasher:
        def verify(self, *_a: Any) -> bool:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.05)
            with lock:
                active -= 1
            raise auth.VerificationError("no")

    monkeypatch.setattr(auth, "_hasher", SlowHasher())

    class NoRows:
        def __call__(self) -> Any:
            return self

        def begin(self) -> Any:
            return self

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *a: Any) -> None:
            return None

        def scalars(self, *_a: Any) -> Any:
            return self

        def first(self) -> None:
            return None

    threads = [threading.Thread(target=auth.authenticate, args=(NoRows(), "x", "y")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak <= passwords.SLOTS


def test_no_database_connection_is_held_while_a_password_is_hashed(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """48 concurrent Basic-auth requests pushed /healthz to 10.8 s: each held a pooled connection
    through argon2, so the pool ran dry for everybody."""
    pool = app.state.sessions.kw["bind"].pool
    seen: list[int] = []
    real = auth._hasher

    class Watching:
        def verify(self, h: str, p: str) -> bool:
            seen.append(pool.checkedout())
            return real.verify(h, p)

        def check_needs_rehash(self, h: str) -> bool:
            return real.check_needs_rehash(h)

    monkeypatch.setattr(auth, "_hasher", Watching())
    assert auth.authenticate(app.state.sessions, "waste1", PASSWORD) is not None
    assert auth.authenticate(app.state.sessions, "waste1", "wrong-password-1") is None
    assert auth.authenticate(app.state.sessions, "nobody", "wrong-password-1") is None
    assert seen == [0, 0, 0]


def test_basic_auth_never_waits_for_a_hashing_slot_on_the_shared_pool() -> None:
    from contextlib import ExitStack

    with passwords.no_wait(), ExitStack() as taken:
        for _ in range(passwords.SLOTS):
            taken.enter_context(passwords.slot())
        with pytest.raises(passwords.HashingBusy), passwords.slot():
            pass


def test_the_unknown_user_hash_has_the_hashers_parameters() -> None:
    """An unknown username is checked against a constant hash; with other argon2 parameters than
    the real ones it would answer faster or slower than a wrong password, and tell names apart."""
    assert not auth._hasher.check_needs_rehash(auth._DUMMY_HASH)
    with pytest.raises(auth.VerificationError):
        auth._hasher.verify(auth._DUMMY_HASH, "a-guess-at-a-password")
