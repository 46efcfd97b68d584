"""Masking of personal data in text shown to people who do not need it, and in logs.

Korean phone numbers keep their first group and last four digits
(``+82 10-****-5678``) so an agent can still tell numbers apart; resident
registration numbers (주민등록번호) keep the birth date and the gender/century digit
(``900101-1******``), which is what the law permits to display.
"""

from __future__ import annotations

import re

import phonenumbers

_PHONE_RE = re.compile(
    r"(?<![\d*])"
    r"(?P<head>(?:\+82[ -]?(?:\(0\))?|0)(?:1[016789]|2|[3-6][1-5]|70|50\d?|80))"
    r"(?P<sep1>[ .-]?)(?P<mid>\d{3,4})(?P<sep2>[ .-]?)(?P<tail>\d{4})"
    r"(?![\d*])"
)
_RRN_RE = re.compile(
    r"(?<!\d)(?P<birth>\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))"
    r"(?P<sep>[ -]?)(?P<g>[1-8])\d{6}(?!\d)"
)


def _mask_match(m: re.Match[str]) -> str:
    return f"{m['head']}{m['sep1']}{'*' * len(m['mid'])}{m['sep2']}{m['tail']}"


def mask_phone(phone: str) -> str:
    """``"+821012345678"`` → ``"+82 10-****-5678"``; unknown formats keep only the last 4 digits."""
    try:
        number = phonenumbers.parse(phone, "KR")
        pretty = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        pretty = phone
    masked, n = _PHONE_RE.subn(_mask_match, pretty)
    if n:
        return masked
    digits = sum(c.isdigit() for c in phone)
    seen = 0
    out = []
    for c in phone:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 4 else "*")
        else:
            out.append(c)
    return "".join(out)


def mask_rrn(rrn: str) -> str:
    """``"900101-1234567"`` → ``"900101-1******"``."""
    return _RRN_RE.sub(lambda m: f"{m['birth']}{m['sep'] or '-'}{m['g']}******", rrn)


def mask_pii(text: str) -> str:
    """``text`` with phone numbers and resident registration numbers masked.

    RRNs go first: their 13 digits would otherwise look like a phone number to the
    phone pattern.
    """
    return _PHONE_RE.sub(_mask_match, mask_rrn(text))
