"""Console access: agents, argon2 passwords, a signed session cookie and CSRF tokens.

* Passwords: argon2id through ``argon2-cffi``'s :class:`PasswordHasher` (rehashed on
  login when the parameters change).
* Session: our own signed cookie (``pcrm_console``), HMAC-SHA256 with
  ``PCRM_SECRET_KEY``; HttpOnly, SameSite=Lax, Secure on https; path ``/``, so the
  supervisor dashboard (``/supervisor``) knows who logged in at ``/console/login``.  It carries the
  agent id, an expiry and a fingerprint of the password hash, so changing a
  password (or deactivating the agent) ends every session of that agent.
* CSRF: a signed double-submit token.  The cookie ``pcrm_csrf`` holds
  ``<nonce>.<hmac(secret, "csrf|" + nonce + "|" + binding)>`` where ``binding`` is the
  agent id (``anon`` on the login page); every POST must send the same token in the
  ``X-CSRF-Token`` header (API) or the ``csrf_token`` form field (login/logout), and
  the signature must verify for the current session.  A cross-site form can neither
  read the cookie nor forge a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_store.models import Agent

ROLES = ("agent", "supervisor", "admin", "field", "editor")
#: Roles that edit the knowledge base (``editor``: content staff, who see no hand-offs).
KB_ROLES = ("editor", "supervisor", "admin")
#: Roles that see every department.
ALL_DEPARTMENTS_ROLES = ("supervisor", "admin")
SESSION_COOKIE = "pcrm_console"
CSRF_COOKIE = "pcrm_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
#: Cookie path: the whole site, so ``/supervisor`` sees the console login too.
COOKIE_PATH = "/"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not-a-real-password")


@dataclass(frozen=True)
class ConsoleUser:
    """The logged-in agent, as every console route sees them."""

    id: int
    username: str
    role: str
    departments: tuple[str, ...] = field(default_factory=tuple)
    display_name: str = ""

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
    return _hasher.hash(password)


def create_agent(sessions: sessionmaker[Session], username: str, password: str, role: str = "agent",
                 departments: Iterable[str] = (), display_name: str = "") -> int:
    """Add an agent (``pcrm users add``); ``ValueError`` for a bad role or a taken username."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    username = username.strip()
    if not username or len(username) > 64:
        raise ValueError("username must be 1-64 characters")
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
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
    """The active agent with these credentials, or ``None`` (constant-ish time either way)."""
    with sessions.begin() as s:
        row = s.scalars(select(Agent).where(Agent.username == username.strip())).first()
        if row is None or not row.active:
            try:
                _hasher.verify(_DUMMY_HASH, password)
            except VerificationError:
                pass
            return None
        try:
            _hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(row.password_hash):
            row.password_hash = hash_password(password)
        s.flush()
        s.expunge(row)
        return row


def _user(row: Agent) -> ConsoleUser:
    return ConsoleUser(id=row.id, username=row.username, role=row.role,
                       departments=tuple(row.departments or ()), display_name=row.display_name or "")


# --- signing -----------------------------------------------------------------------------------

def _secret(request: Request) -> bytes:
    settings = getattr(request.app.state, "settings", None)
    key = getattr(settings, "pcrm_secret_key", None) or "dev-insecure-change-me"
    return hashlib.sha256(b"pcrm-console|" + key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, msg: str) -> str:
    return _b64(hmac.new(secret, msg.encode(), hashlib.sha256).digest())


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def session_cookie_value(request: Request, agent: Agent) -> str:
    payload = _b64(json.dumps({"a": agent.id, "e": int(time.time()) + SESSION_TTL_S,
                               "f": _fingerprint(agent.password_hash)}).encode())
    return f"{payload}.{_sign(_secret(request), 'session|' + payload)}"


def _session_payload(request: Request, raw: str | None) -> dict[str, Any] | None:
    if not raw or raw.count(".") != 1:
        return None
    payload, sig = raw.split(".")
    if not hmac.compare_digest(sig, _sign(_secret(request), "session|" + payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("e", 0)) < time.time():
        return None
    return data


def current_user(request: Request) -> ConsoleUser | None:
    """The agent of the request's session cookie, checked against the store (active, same password)."""
    return user_from_cookies(request, request.cookies.get(SESSION_COOKIE))


def user_from_cookies(request: Any, raw: str | None) -> ConsoleUser | None:
    """Like :func:`current_user`, for HTTP requests and WebSockets alike."""
    data = _session_payload(request, raw)
    if data is None:
        return None
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as s:
        row = s.get(Agent, int(data.get("a", 0)))
        if row is None or not row.active or _fingerprint(row.password_hash) != data.get("f"):
            return None
        return _user(row)


def require_user(request: Request) -> ConsoleUser:
    """FastAPI dependency of the JSON API: 401 without a valid session."""
    user = current_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="login required")
    return user


# --- CSRF --------------------------------------------------------------------------------------

def _binding(user: ConsoleUser | None) -> str:
    return f"agent:{user.id}" if user is not None else "anon"


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
