"""Who may use the supervisor pages: the dependencies every ``/supervisor`` route declares.

Before, each route called ``viewer()`` and turned its error into a response by hand; a route that
forgot would have been open. Now a route states its audience in its signature:
``Depends(require_supervisor)`` (JSON, CSV, YAML) or ``Depends(require_supervisor_page)`` (HTML).

Who: the console's session (``bot.console.auth.current_user``; its cookie has path ``/``, so a
supervisor who logged in at ``/console/login`` opens these pages in the browser). HTTP Basic (for
scripts fetching the CSV) only from the addresses in ``PCRM_SUPERVISOR_BASIC_ALLOW`` (none by
default), throttled and audited like the console login, on the bounded argon2 pool: before, every
anonymous request anywhere ran argon2, and a few dozen at once stalled even ``/healthz``.
Anonymous → 401 (with ``WWW-Authenticate: Basic``; a browser asking for a page is sent to the
console login instead), an agent → 403, too many failed logins → 429, no hashing slot → 503.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from bot.console.auth import ConsoleUser
from bot.web.pages import LoginRedirect, here, wants_login_page

ALLOWED_ROLES = ("supervisor", "admin")
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="pcrm supervisor", charset="UTF-8"'}


class Denied(Exception):
    """Why a request may not see the supervisor pages: an HTTP status and its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def http(self) -> HTTPException:
        """The answer: ``{"detail": ...}`` with the status, and the header the status calls for."""
        headers = {401: BASIC_CHALLENGE, 429: {"Retry-After": "60"}, 503: {"Retry-After": "5"}}.get(self.status)
        return HTTPException(status_code=self.status, detail=self.detail, headers=headers)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or len(username) > 64 or len(password) > 256:
        return None
    return username, password


def basic_allowed(request: Request) -> bool:
    """Whether the client's address is in ``PCRM_SUPERVISOR_BASIC_ALLOW`` (IPs or CIDRs)."""
    from bot.throttle import client_ip

    allow = getattr(request.app.state.settings, "pcrm_supervisor_basic_allow", "") or ""
    try:
        ip = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    for entry in allow.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _basic_login(request: Request, creds: tuple[str, str]) -> Any:
    """The agent of Basic credentials, throttled (429) and audited like the console login."""
    from bot import throttle
    from bot.console.auth import authenticate
    from bot.console.passwords import HashingBusy, no_wait
    from bot.ratelimit import RateLimited
    from crm_store.models import audit

    sessions: sessionmaker[Session] = request.app.state.sessions
    ip, lim = throttle.client_ip(request), throttle.limiter(request.app)
    try:
        throttle.login_blocked(lim, creds[0], ip)
        with no_wait():  # on the shared thread pool: never wait for a hashing slot (503 instead)
            agent = authenticate(sessions, *creds)
    except RateLimited as exc:
        raise Denied(429, f"too many failed logins; retry after {exc.retry_after}s") from exc
    except HashingBusy as exc:
        raise Denied(503, "busy; try again shortly") from exc
    if agent is None:
        throttle.login_failed(lim, creds[0], ip)
        with sessions.begin() as s:
            s.add(audit(creds[0][:64] or "-", "supervisor.basic_failed", f"client:{ip}"))
    return agent


def viewer(request: Request) -> ConsoleUser:
    """The supervisor or admin making the request; :class:`Denied` 401 (nobody) or 403 (an agent)."""
    from bot.console.auth import current_user

    who = current_user(request)
    if who is None:
        creds = _basic_credentials(request) if basic_allowed(request) else None
        agent = _basic_login(request, creds) if creds else None
        if agent is None:
            raise Denied(401, "login required")
        who = ConsoleUser(id=agent.id, username=agent.username, role=agent.role,
                          departments=tuple(agent.departments or ()), display_name=agent.display_name or "")
    if who.role not in ALLOWED_ROLES:
        raise Denied(403, "supervisors and admins only")
    return who


def require_supervisor(request: Request) -> ConsoleUser:
    """Dependency of the data routes (JSON, CSV, YAML): the viewer, or 401/403/429/503 as JSON.

    A plain ``def``: FastAPI runs it on the thread pool, where the store and argon2 may block."""
    try:
        return viewer(request)
    except Denied as err:
        raise err.http() from None


def require_supervisor_page(request: Request) -> ConsoleUser:
    """Dependency of the HTML pages: like :func:`require_supervisor`, but a browser without
    credentials is sent to the console login (and back here after it)."""
    try:
        return viewer(request)
    except Denied as err:
        if err.status == 401 and wants_login_page(request):
            raise LoginRedirect(here(request)) from None
        raise err.http() from None
