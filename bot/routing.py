"""Routing decisions: which department, what priority, and whether people are at work."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

PRIORITY_EMERGENCY = 100
PRIORITY_SAFETY = 50
PRIORITY_NORMAL = 10

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class BusinessHours:
    """Office hours from ``config.yml``: weekdays, open/close times and public holidays."""

    def __init__(self, config: dict[str, Any]) -> None:
        bh = config.get("business_hours") or {}
        self.tz = ZoneInfo((config.get("municipality") or {}).get("timezone", "Asia/Seoul"))
        self.days = set(bh.get("weekdays", _DAYS[:5]))
        self.open = str(bh.get("open", "09:00"))
        self.close = str(bh.get("close", "18:00"))
        self.holidays = {str(d) for d in bh.get("holidays", [])}
        self.always_open = bool(bh.get("always_open", False))

    def is_open(self, now: datetime) -> bool:
        """True when an agent can pick up a hand-off now."""
        if self.always_open:
            return True
        local = now.astimezone(self.tz)
        if local.strftime("%Y-%m-%d") in self.holidays or _DAYS[local.weekday()] not in self.days:
            return False
        hm = local.strftime("%H:%M")
        return self.open <= hm < self.close

    def describe(self, lang: str) -> str:
        days = "평일" if lang == "ko" else "weekdays"
        return f"{days} {self.open}–{self.close}"


def priority_for(label: str, department: str | None) -> int:
    """Emergencies first, then safety, then everything else by waiting time."""
    if label == "conv.emergency":
        return PRIORITY_EMERGENCY
    if department == "safety":
        return PRIORITY_SAFETY
    return PRIORITY_NORMAL
