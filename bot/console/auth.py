"""Console access: agents, argon2 passwords, server-side sessions and CSRF tokens.

* Passwords: argon2id through ``argon2-cffi``'s :class:`PasswordHasher` (rehashed on
  login when the parameters change), on a bounded pool, under the policy of
  :mod:`bot.console.passwords` (ASVS 2.1: ≥ 12 characters, not a common or breached password).
* Session: the cookie ``pcrm_console`` holds a random token (256 bits); the server keeps its
  SHA-256 in ``console_sessions`` with the agent, the client, and three clocks: an absolute
  lifetime (:data:`SESSION_TTL_S`), an idle timeout (:data:`IDLE_TIMEOUT_S`) and ``ended_at``.
  Logout ends the row, so a copied cookie is dead afterwards; a password change or deactivation
  ends every session of the agent (``pcrm users passwd|disable``); ``pcrm users sessions``
  lists them. HttpOnly, SameSite=Lax, Secure on https; path ``/``, so the supervisor dashboard
  (``/supervisor``) knows who logged in at ``/console/login``.
* Logins: failures are audited (``console.login_failed``) and throttled per account and per
  client address (:mod:`bot.throttle`); while locked out the answer is 429, even for the right
  password.
* CSRF: a signed double-submit token.  The cookie ``pcrm_csrf`` holds
  ``<nonce>.<hmac(secret, "csrf|" + nonce + "|" + binding)>`` where ``binding`` is the
  session (``anon`` on the login page); every POST must send the same token in the
  ``X-CSRF-Token`` header (API) or the ``csrf_token`` form field (login/logout), and
  the signature must verify for the current session.  A cross-site form can neither
  read the cookie nor forge a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.console.passwords import check_policy, slot
from crm_store.models import Agent, ConsoleSession
from crm_store.timeutil import as_utc, utcnow

ROLES = ("agent", "supervisor", "admin", "field", "editor")
#: Roles that edit the knowledge base (``editor``: content staff, who see no hand-offs).
KB_ROLES = ("editor", "supervisor", "admin")
#: Roles that see every department.
ALL_DEPARTMENTS_ROLES = ("supervisor", "admin")
SESSION_COOKIE = "pcrm_console"
CSRF_COOKIE = "pcrm_csrf"
CSRF_HEADER = "x-csrf-token"
#: Absolute lifetime of a console session (a working day), whatever the activity.
SESSION_TTL_S = 12 * 3600
#: A session unused this long has ended (ASVS 3.3.2 allows 30 minutes for level 2).
IDLE_TIMEOUT_S = 30 * 60
#: ``last_seen_at`` is written at most this often (one UPDATE per minute, not per request).
TOUCH_EVERY_S = 60
#: Cookie path: the whole site, so ``/supervisor`` sees the console login too.
COOKIE_PATH = "/"

_hasher = PasswordHasher()
#: Checked against when the username is unknown, so that answer takes as long as a wrong password.
#: A constant, not hashed at import: every start paid for one argon2 hash before this (README,
#: "Memory and start-up").
#: It must carry the hasher's parameters (else it verifies faster or slower than a real hash);
#: tests/test_console_security.py checks ``check_needs_rehash`` is false for it.
_DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$gb+pSr9Gks4xoYMpOgSIKA$r6TGJ4lOWuD7zDK8ZvN6yxiVtIOgo2nXxCoUjNSbwLc"


@dataclass(frozen=True)
class ConsoleUser:
    """The logged-in agent, as every console route sees them."""

    id: int
    username: str
    role: str
    departments: tuple[str, ...] = field(default_factory=tuple)
    display_name: str = ""
    #: The ``console_sessions`` row of this request (None outside a login session).
    session_id: int | None = None

    @property
    def sees_all(self) -> bool:
        return self.role in ALL_DEPARTMENTS_ROLES

    def can_see(self, department: str | None) -> bool:
        """Whether this user may see and act on items of ``department``."""
        return self.sees_all or (department is not None and department in self.departments)

    @property
    def name(self) -> str:
        return self.display_name or self.username


# --- passwords / agents ------------------------------------------------------------------------

def hash_password(password: str) -> str:
    with slot():
        return _hasher.hash(password)


def create_agent(sessions: sessionmaker[Session], username: str, password: str, role: str = "agent",
                 departments: Iterable[str] = (), display_name: str = "") -> int:
    """Add an agent (``pcrm users add``); ``ValueError`` for a bad role or a taken username."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    username = username.strip()
    if not username or len(username) > 64:
        raise ValueError("username must be 1-64 characters")
    check_policy(password, username)
    with sessions.begin() as s:
        if s.scalars(select(Agent).where(Agent.username == username)).first() is not None:
            raise ValueError(f"user {username!r} exists already")
        row = Agent(username=username, password_hash=hash_password(password), role=role,
                    departments=list(dict.fromkeys(departments)), display_name=display_name or username,
                    active=True)
        s.add(row)
        s.flush()
        return row.id


def authenticate(sessions: sessionmaker[Session], username: str, password: str) -> Agent | None:
    """The active agent with these credentials, or ``None`` (constant-ish time either way).

    The hash is checked with no database connection held: argon2 takes tens of milliseconds,
    and holding a pooled connection meanwhile let a flood of logins exhaust the pool, so even
    ``/healthz`` waited."""
    with sessions() as s:
        row = s.scalars(select(Agent).where(Agent.username == username.strip())).first()
        if row is not None:
            s.expunge(row)
    if row is None or not row.active:
        try:
            with slot():
                _hasher.verify(_DUMMY_HASH, password)
        except VerificationError:
            pass
        return None
    try:
        with slot():
            _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        new_hash = hash_password(password)
        with sessions.begin() as s:
            s.execute(update(Agent).where(Agent.id == row.id, Agent.password_hash == row.password_hash)
                      .values(password_hash=new_hash).execution_options(synchronize_session=False))
        row.password_hash = new_hash
    return row


def _user(row: Agent, session_id: int | None = None) -> ConsoleUser:
    return ConsoleUser(id=row.id, username=row.username, role=row.role,
                       departments=tuple(row.departments or ()), display_name=row.display_name or "",
                       session_id=session_id)


# --- signing -----------------------------------------------------------------------------------

def _secret(request: Request) -> bytes:
    settings = getattr(request.app.state, "settings", None)
    key = getattr(settings, "pcrm_secret_key", None)
    if not key:  # never a constant: bot.secrets gives every installation its own
        from bot.secret_key import installation_secret

        key = installation_secret(settings)
    return hashlib.sha256(b"pcrm-console|" + key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(secret: bytes, msg: str) -> str:
    return _b64(hmac.new(secret, msg.encode(), hashlib.sha256).digest())


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(sessions: sessionmaker[Session], agent: Agent, client: str = "", user_agent: str = "") -> str:
    """A new server-side session of ``agent``; returns the cookie value (shown once, stored hashed)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with sessions.begin() as s:
        s.add(ConsoleSession(token_hash=_token_hash(token), agent_id=agent.id, created_at=now, last_seen_at=now,
                             expires_at=now + timedelta(seconds=SESSION_TTL_S), client=client[:64],
                             user_agent=user_agent[:200]))
    return token


def end_session(sessions: sessionmaker[Session], token: str | None) -> bool:
    """End the session of cookie value ``token`` (logout); whether one was live."""
    if not token or len(token) > 100:
        return False
    with sessions.begin() as s:
        done = s.execute(update(ConsoleSession).where(ConsoleSession.token_hash == _token_hash(token),
                                                      ConsoleSession.ended_at.is_(None))
                         .values(ended_at=utcnow()).execution_options(synchronize_session=False))
        return bool(done.rowcount)


def end_sessions_of(s: Session, agent_id: int) -> int:
    """End every live session of an agent (password change, deactivation); how many."""
    done = s.execute(update(ConsoleSession).where(ConsoleSession.agent_id == agent_id,
                                                  ConsoleSession.ended_at.is_(None))
                     .values(ended_at=utcnow()).execution_options(synchronize_session=False))
    return int(done.rowcount or 0)


def session_cookie_value(request: Request, agent: Agent) -> str:
    """A new session of ``agent`` for this request's client (see :func:`start_session`)."""
    from bot.throttle import client_ip

    return start_session(request.app.state.sessions, agent, client_ip(request),
                         request.headers.get("user-agent", ""))


def current_user(request: Request) -> ConsoleUser | None:
    """The agent of the request's session cookie, checked against the store (live session, active agent)."""
    return user_from_cookies(request, request.cookies.get(SESSION_COOKIE))


def user_from_cookies(request: Any, raw: str | None) -> ConsoleUser | None:
    """Like :func:`current_user`, for HTTP requests and WebSockets alike."""
    if not raw or len(raw) > 100:
        return None
    sessions: sessionmaker[Session] = request.app.state.sessions
    now = utcnow()
    with sessions() as s:
        found = s.execute(select(ConsoleSession, Agent).join(Agent, Agent.id == ConsoleSession.agent_id)
                          .where(ConsoleSession.token_hash == _token_hash(raw))).first()
        if found is None:
            return None
        row, agent = found
        idle = (now - as_utc(row.last_seen_at)).total_seconds()
        if row.ended_at is not None or as_utc(row.expires_at) <= now or idle > IDLE_TIMEOUT_S or not agent.active:
            return None
        if idle > TOUCH_EVERY_S:
            row.last_seen_at = now
            s.commit()
        return _user(agent, row.id)


def require_user(request: Request) -> ConsoleUser:
    """FastAPI dependency of the JSON API: 401 without a valid session."""
    user = current_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="login required")
    return user


# --- CSRF --------------------------------------------------------------------------------------

def _binding(user: ConsoleUser | None) -> str:
    if user is None:
        return "anon"
    return f"session:{user.session_id}" if user.session_id is not None else f"agent:{user.id}"


def new_csrf_token(request: Request, user: ConsoleUser | None) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_sign(_secret(request), f'csrf|{nonce}|{_binding(user)}')}"


def csrf_token_for(request: Request, user: ConsoleUser | None) -> tuple[str, bool]:
    """The token to put in the page, and whether the cookie must be (re)set."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and _csrf_valid(request, existing, user):
        return existing, False
    return new_csrf_token(request, user), True


def _csrf_valid(request: Request, token: str, user: ConsoleUser | None) -> bool:
    if token.count(".") != 1:
        return False
    nonce, sig = token.split(".")
    return hmac.compare_digest(sig, _sign(_secret(request), f"csrf|{nonce}|{_binding(user)}"))


def check_csrf(request: Request, user: ConsoleUser | None, submitted: str | None) -> None:
    """403 unless ``submitted`` equals the CSRF cookie and is signed for this session."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not submitted or not cookie or not hmac.compare_digest(submitted, cookie) \
            or not _csrf_valid(request, submitted, user):
        raise HTTPException(status_code=403, detail="CSRF token missing or invalid")


def set_cookie(response: Any, request: Request, name: str, value: str, http_only: bool = True,
               max_age: int | None = SESSION_TTL_S) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=http_only, samesite="lax",
                        secure=request.url.scheme == "https")


def api_user_with_csrf(request: Request) -> ConsoleUser:
    """Dependency of every console POST: a session (401) and a valid CSRF header (403)."""
    user = require_user(request)
    check_csrf(request, user, request.headers.get(CSRF_HEADER))
    return user


def require_kb_editor(request: Request) -> ConsoleUser:
    """Dependency of the knowledge-base API: a session (401) of a role in :data:`KB_ROLES` (403)."""
    user = require_user(request)
    if user.role not in KB_ROLES:
        raise HTTPException(status_code=403, detail="knowledge-base editors only")
    return user


def kb_editor_with_csrf(request: Request) -> ConsoleUser:
    """:func:`require_kb_editor` plus a valid CSRF header (every knowledge-base POST)."""
    user = require_kb_editor(request)
    check_csrf(request, user, request.headers.get(CSRF_HEADER))
    return user
