"""Entity extraction: ticket numbers, phone numbers, times, addresses, places.

Fixed-shape entities (tickets, phones, coordinates, road addresses) are regular
expressions over the normalised text: exact, and fast. Named places (동 names,
landmarks from the lookup tables) come from the spaCy EntityRuler in the trained
pipeline, which matches on Kiwi morphemes and so survives particles and spacing.
"""

from __future__ import annotations

import re
from typing import Any

TICKET = re.compile(r"(?<!\d)(20\d{2})\s*[-–—]?\s*(\d{6})(?!\d)")
PHONE = re.compile(r"(?<!\d)(?:\+?82[\s-]?)?0?(1[016789]|2|[3-6][1-5])[\s-]?(\d{3,4})[\s-]?(\d{4})(?!\d)")
RRN = re.compile(r"(?<!\d)(\d{6})\s*-\s*([1-8]\d{6})(?!\d)")
COORDS = re.compile(r"(-?\d{1,2}\.\d{3,})\s*,\s*(-?\d{1,3}\.\d{3,})")
ROAD_ADDRESS = re.compile(
    r"(?:[가-힣]+(?:시|구)\s+)?(?:[가-힣]+\d*동\s+)?[가-힣0-9]+(?:대로|로|길)\s*\d+(?:\s*[-번]\s*\d+)?(?:\s*번?길\s*\d+)?"
    r"(?:\s*\d+호)?|[가-힣]+\d*동\s*\d+(?:-\d+)?(?:번지)?"
)
EN_ADDRESS = re.compile(r"\b\d+(?:-\d+)?\s+[A-Z][A-Za-z]*(?:-(?:ro|gil|daero|dong))\b|\b[A-Z][A-Za-z]*-(?:ro|gil|daero)\s*\d+\b")
PLACE_SUFFIX = re.compile(r"([가-힣A-Za-z0-9]+(?:역|사거리|삼거리|초등학교|중학교|고등학교|공원|시장|아파트|빌라|놀이터|정류장|주민센터|병원|교회|마트))"
                          r"(?:\s*\d+동)?\s*(?:앞|옆|근처|뒤|건너편|입구)?")
WHEN = re.compile(
    r"(오늘|어젯밤|그젯밤|지난밤|오늘\s?밤|엊저녁|어제|그제|그저께|엊그제|내일|모레|다음\s?주(?:\s?[월화수목금토일]요일)?|지난\s?주|이번\s?주|아까|방금|며칠\s?(?:전|째)|\d+\s?(?:일|시간|주|개월|달)\s?(?:전|째|동안)|"
    r"(?:오전|오후|새벽|아침|저녁|밤)\s?\d{0,2}\s?시?|\d{1,2}\s?시(?:\s?\d{1,2}\s?분)?|\d{1,2}월\s?\d{1,2}일|"
    r"(?:월|화|수|목|금|토|일)요일|일주일\s?(?:전|째)|한\s?달\s?(?:전|째)|계속|매일|"
    r"today|yesterday|this morning|last night|tonight|\d+\s?(?:days?|hours?|weeks?)\s?ago|since \w+|"
    r"last week|every (?:day|night)|right now|just now|tomorrow|(?:next|this|last|on)\s+(?:monday|tuesday|wednesday|thursday|"
    r"friday|saturday|sunday|week|weekend)|for (?:\d+|a|two|three|several|a few) (?:days?|weeks?|hours?|months?)|"
    r"since (?:yesterday|last \w+|this morning|\d+))",
    re.IGNORECASE,
)


def _span(label: str, m: re.Match[str], value: Any = None) -> dict[str, Any]:
    return {"entity": label, "value": value if value is not None else m.group(0).strip(),
            "start": m.start(), "end": m.end(), "extractor": "regex"}


_DIGIT = re.compile(r"\d")


def extract_patterns(text: str) -> list[dict[str, Any]]:
    """Regex entities in ``text`` (already normalised: spoken numbers are digits)."""
    return _extract(text, digits=_DIGIT.search(text) is not None)


def _extract(text: str, digits: bool) -> list[dict[str, Any]]:
    """The patterns over ``text``; ``digits=False`` skips those that need a digit to match.

    Tickets, RRNs, phones, coordinates, road and English addresses all contain a ``\\d``; most
    messages have none, and this runs on every message (``digits=True`` runs everything).
    """
    found: list[dict[str, Any]] = []
    ticket_spans: list[tuple[int, int]] = []
    if digits:
        for m in TICKET.finditer(text):
            found.append(_span("ticket", m, f"{m.group(1)}-{m.group(2)}"))
        ticket_spans = [(e["start"], e["end"]) for e in found]
        for m in RRN.finditer(text):
            found.append(_span("rrn", m))
        for m in PHONE.finditer(text):
            if any(s <= m.start() < e for s, e in ticket_spans):
                continue
            area = m.group(1)
            prefix = "0" + area if not area.startswith("0") else area
            found.append(_span("phone", m, f"{prefix}-{m.group(2)}-{m.group(3)}"))
        for m in COORDS.finditer(text):
            lat, long = float(m.group(1)), float(m.group(2))
            if -90 <= lat <= 90 and -180 <= long <= 180:
                found.append(_span("coordinates", m, {"lat": lat, "long": long}))
    for rx in (ROAD_ADDRESS, EN_ADDRESS, PLACE_SUFFIX) if digits else (PLACE_SUFFIX,):
        for m in rx.finditer(text):
            if any(s <= m.start() < e for s, e in ticket_spans):
                continue
            found.append(_span("address", m))
    for m in WHEN.finditer(text):
        found.append(_span("when", m))
    return found


def merge(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Combine entity lists, dropping exact duplicates, ordered by position."""
    seen: set[tuple[str, int, int]] = set()
    out: list[dict[str, Any]] = []
    for group in groups:
        for e in group:
            key = (e["entity"], e["start"], e["end"])
            if key not in seen:
                seen.add(key)
                out.append(e)
    return sorted(out, key=lambda e: (e["start"], e["end"]))


def first(entities: list[dict[str, Any]], name: str) -> Any:
    """Value of the first entity called ``name``, or None."""
    return next((e["value"] for e in entities if e["entity"] == name), None)
