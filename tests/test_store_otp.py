"""One-time codes: right code once, wrong codes lock after five tries, codes expire."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_store import otp
from crm_store.models import OtpCode

KEY, PHONE, SECRET = "telegram:42", "010-1234-5678", "test-secret"


def test_code_verifies_once_and_is_stored_hashed(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        code = otp.issue(s, KEY, PHONE, secret=SECRET)
        assert len(code) == 6 and code.isdigit()
        row = s.scalars(select(OtpCode)).one()
        assert code not in row.code_hash and row.phone == "+821012345678"
        assert not otp.verify(s, KEY, PHONE, code, secret="other-secret")
        assert otp.verify(s, KEY, "+82 10-1234-5678", code, secret=SECRET)
        assert not otp.verify(s, KEY, PHONE, code, secret=SECRET)  # consumed


def test_five_wrong_attempts_lock_the_code(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        code = otp.issue(s, KEY, PHONE, secret=SECRET)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(otp.MAX_ATTEMPTS):
            assert not otp.verify(s, KEY, PHONE, wrong, secret=SECRET)
        assert not otp.verify(s, KEY, PHONE, code, secret=SECRET)


def test_expired_and_superseded_codes_fail(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        first = otp.issue(s, KEY, PHONE, secret=SECRET)
        second = otp.issue(s, KEY, PHONE, secret=SECRET)
        if first != second:
            assert not otp.verify(s, KEY, PHONE, first, secret=SECRET)
        row = s.scalars(select(OtpCode).where(OtpCode.consumed_at.is_(None))).one()
        row.expires_at -= otp.TTL + timedelta(seconds=1)
        s.flush()
        assert not otp.verify(s, KEY, PHONE, second, secret=SECRET)
