"""Masking of personal data in text shown to people who do not need it, and in logs.

Korean phone numbers keep their first group and last four digits
(``+82 10-****-5678``) so an agent can still tell numbers apart; resident
registration numbers (주민등록번호) keep the birth date and the gender/century digit
(``900101-1******``), which is what the law permits to display.

Residents do not type numbers the way a regex expects: full-width digits (０１０), en dashes,
``(010)9876-5432``, spaced groups, foreign numbers. :func:`mask_pii` therefore looks at a
*shadow* of the text in which every Unicode digit is its ASCII digit and every dash or space
variant is ``-`` or a space (one character for one, so positions match), and masks in the
original text what it finds in the shadow: the Korean patterns first (their familiar output),
then whatever ``phonenumbers``' :class:`PhoneNumberMatcher` finds (any country), then, as a
last net, any run of 9–15 digits joined by separators (not a ticket number ``YYYY-NNNNNN``).
"""

from __future__ import annotations

import re
import unicodedata

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


_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\u30fc\u2043"
_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t"
_OTHER = {"\uff08": "(", "\uff09": ")", "\uff0b": "+", "\uff0e": ".", "\u3002": ".", "\uff0f": "/"}
#: A phone-like run: ``+`` and a digit, or ``0`` (maybe after ``(``), then 7-14 more digits with separators.
_RUN_RE = re.compile(r"(?<![\d*+:.,/])(?:\+\d|\(?0)(?:[ ./()\-]{0,3}\d){7,14}(?![\d*])")
_TICKET_RE = re.compile(r"^\d{4}-\d{6}$")


def _shadow(text: str) -> str:
    """``text`` with Unicode digits, dashes and spaces made ASCII, one character for one."""
    out = []
    for c in text:
        if c.isascii():
            out.append(c)
        elif c in _DASHES:
            out.append("-")
        elif c in _SPACES or unicodedata.category(c) == "Zs":
            out.append(" ")
        elif c in _OTHER:
            out.append(_OTHER[c])
        else:
            d = unicodedata.digit(c, None)
            out.append(str(d) if d is not None and unicodedata.category(c) == "Nd" else c)
    return "".join(out)


def _star(chars: list[str], start: int, end: int, keep_head: int = 0, keep_tail: int = 4) -> None:
    """Star the digits of ``chars[start:end]`` except the first ``keep_head`` and last ``keep_tail``."""
    digits = [i for i in range(start, end) if chars[i].isdigit() or unicodedata.category(chars[i]) == "Nd"]
    for i in digits[keep_head:max(keep_head, len(digits) - keep_tail)]:
        chars[i] = "*"


def mask_pii(text: str, full: bool = False) -> str:
    """``text`` with phone numbers and resident registration numbers masked, however they are written.

    ``full``: every digit of a number starred (the public Open311 feed), not just the middle.
    RRNs go first: their 13 digits would otherwise look like a phone number to the
    phone pattern.
    """
    if sum(c.isdigit() for c in text) < 7:  # nothing long enough to be a number (the common case)
        return text
    chars = list(text)
    shadow = _shadow(text)
    tail = 0 if full else 4
    for m in _RRN_RE.finditer(shadow):
        _star(chars, m.start() if full else m.start("g") + 1, m.end(), keep_tail=0)
    for m in _PHONE_RE.finditer("".join(c if c == "*" else s for c, s in zip(chars, shadow, strict=True))):
        _star(chars, m.start() if full else m.start("mid"), m.end() if full else m.end("mid"), keep_tail=0)
    current = "".join(c if c == "*" else s for c, s in zip(chars, shadow, strict=True))
    if sum(c.isdigit() for c in current) >= 7:
        for m in phonenumbers.PhoneNumberMatcher(current, "KR", leniency=phonenumbers.Leniency.VALID):
            near = current[max(0, m.start - 2):m.end + 2]
            if "*" not in near and not _TICKET_RE.match(m.raw_string):
                _star(chars, m.start, m.end, keep_tail=tail)
        current = "".join(c if c == "*" else s for c, s in zip(chars, shadow, strict=True))
        for m in _RUN_RE.finditer(current):
            if not _TICKET_RE.match(m.group()):
                _star(chars, m.start(), m.end(), keep_tail=tail)
    return "".join(chars)
