"""Who may fetch a file a resident sent (photos, voice mail): staff of the owning department, or
the holder of a short-lived signed URL.

Files are the residents' own (faces, number plates, the inside of their homes). Before, the
proxy ``GET /webhooks/telegram/file/{id}`` answered anyone, and the public Open311 feed listed
those URLs. Now:

* a console session whose user sees the department of the service request that holds the
  file (:meth:`ConsoleUser.can_see`); a file no request holds, only supervisors and admins;
* or a signed URL (``?exp=<unix time>&sig=<hmac>``), valid :data:`TTL_S` seconds, handed only to
  Open311 clients that sent a valid key (city systems get the full record, media included).
  The signature covers the path and the expiry, keyed with ``PCRM_SECRET_KEY``; access logs
  drop the query string's ``sig`` (:mod:`bot.logging_setup`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select

TTL_S = 3600


def _sig(secret: str, path: str, exp: int) -> str:
    return hmac.new(hashlib.sha256(b"pcrm-media|" + secret.encode()).digest(),
                    f"{path}|{exp}".encode(), hashlib.sha256).hexdigest()


def signed_url(settings: Any, url: str, ttl_s: int = TTL_S, now: float | None = None) -> str:
    """``url`` (one of ours) with an expiry and its signature."""
    parts = urlsplit(url)
    exp = int((time.time() if now is None else now) + ttl_s)
    query = urlencode({"exp": exp, "sig": _sig(settings.pcrm_secret_key, parts.path, exp)})
    return f"{url}{'&' if parts.query else '?'}{query}"


def signature_valid(settings: Any, path: str, exp: str | None, sig: str | None) -> bool:
    if not exp or not sig or not exp.isdigit() or int(exp) < time.time() or len(sig) != 64:
        return False
    return hmac.compare_digest(sig, _sig(settings.pcrm_secret_key, path, int(exp)))


def owning_department(sessions: Any, file_id: str) -> str | None:
    """The department of the service request whose ``media_url`` is this file, if any."""
    from crm_store.models import ServiceRequest

    with sessions() as s:
        return s.scalars(select(ServiceRequest.agency_responsible)
                         .where(ServiceRequest.media_url.like(f"%/file/{file_id}")).limit(1)).first()


def may_fetch(request: Any, file_id: str) -> int:
    """200 if this request may have the file, 401 without a session or a signature, 403 for
    staff of another department."""
    from bot.console.auth import current_user

    settings = request.app.state.settings
    if signature_valid(settings, request.url.path, request.query_params.get("exp"), request.query_params.get("sig")):
        return 200
    user = current_user(request)
    if user is None:
        return 401
    if user.sees_all:
        return 200
    dept = owning_department(request.app.state.sessions, file_id)
    return 200 if dept is not None and user.can_see(dept) else 403
