"""One-time codes that prove a resident owns a phone number.

Before a Telegram or web-chat user can link a number (and so see that number's
history) we text them a 6-digit code.  Only an HMAC-SHA256 of the code is stored,
keyed with a server secret, so a database dump does not reveal live codes; codes
expire after 5 minutes and lock after 5 wrong attempts.

Every attempt is counted in the caller's transaction, which must be *committed* whatever the
outcome (a wrong code is not an error to roll back): :func:`check` returns the outcome instead
of raising, so the caller leaves its ``with sessions.begin()`` block normally and only then
answers 400 or 429. A locked code stays the newest one for its identity until it expires or a
new code is issued, so every further attempt is answered ``"locked"``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.phones import normalize_phone
from crm_store.models import OtpCode
from crm_store.timeutil import utcnow

log = logging.getLogger(__name__)

TTL = timedelta(minutes=5)
MAX_ATTEMPTS = 5
_fallback_secret: str | None = None


def _secret(secret: str | None) -> bytes:
    """The HMAC key: the argument, which the app gives as ``Settings.pcrm_secret_key`` (the
    store reads no environment).

    Without it, a random per-process key is used (fine for one process and for
    tests; codes then do not survive a restart) and a warning is logged once.
    """
    global _fallback_secret
    value = secret
    if not value:
        if _fallback_secret is None:
            log.warning("no secret given: one-time codes use a per-process random key")
            _fallback_secret = secrets.token_hex(32)
        value = _fallback_secret
    return value.encode()


def _hash(identity_key: str, phone: str, code: str, secret: str | None) -> str:
    msg = f"{identity_key}|{phone}|{code}".encode()
    return hmac.new(_secret(secret), msg, hashlib.sha256).hexdigest()


def issue(session: Session, identity_key: str, phone: str, secret: str | None = None) -> str:
    """A new 6-digit code for ``identity_key`` to prove ``phone``; earlier codes stop working.

    Returns the code in clear, to be sent by SMS and never stored or logged.
    """
    e164 = normalize_phone(phone)
    now = utcnow()
    session.execute(
        update(OtpCode)
        .where(OtpCode.identity_key == identity_key, OtpCode.consumed_at.is_(None))
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        OtpCode(
            identity_key=identity_key,
            phone=e164,
            code_hash=_hash(identity_key, e164, code, secret),
            expires_at=now + TTL,
            attempts=0,
        )
    )
    session.flush()
    return code


Outcome = Literal["ok", "wrong", "locked", "none"]


def check(session: Session, identity_key: str, phone: str, code: str,
          secret: str | None = None) -> tuple[Outcome, datetime | None]:
    """Try ``code`` for ``identity_key``/``phone``: ``("ok", None)`` consumes it; ``"wrong"`` counts
    an attempt; ``"locked"`` (with the code's expiry) once :data:`MAX_ATTEMPTS` were wrong; ``"none"``
    without a live code. The caller commits in every case."""
    e164 = normalize_phone(phone)
    now = utcnow()
    stmt = (
        select(OtpCode)
        .where(OtpCode.identity_key == identity_key, OtpCode.phone == e164, OtpCode.consumed_at.is_(None))
        .order_by(OtpCode.created_at.desc(), OtpCode.id.desc())
        .limit(1)
        .with_for_update()
    )
    row = session.scalars(stmt).first()
    if row is None or row.expires_at <= now:
        return "none", None
    if row.attempts >= MAX_ATTEMPTS:
        return "locked", row.expires_at
    row.attempts += 1
    ok = hmac.compare_digest(row.code_hash, _hash(identity_key, e164, code.strip(), secret))
    if ok:
        row.consumed_at = now
    session.flush()
    return ("ok", None) if ok else ("wrong", None)


def verify(session: Session, identity_key: str, phone: str, code: str, secret: str | None = None) -> bool:
    """Whether ``code`` is the live code for ``identity_key``/``phone`` (consumes it if so)."""
    return check(session, identity_key, phone, code, secret)[0] == "ok"
