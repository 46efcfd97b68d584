"""Routing decisions: which department, what priority, and whether people are at work."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from bot.municipality import DAYS, Municipality

PRIORITY_EMERGENCY = 100
PRIORITY_SAFETY = 50
PRIORITY_NORMAL = 10

_DAYS = list(DAYS)


class BusinessHours:
    """Office hours from ``config.yml``: weekdays, open/close times and public holidays."""

    def __init__(self, config: Municipality | Mapping[str, Any]) -> None:
        m = Municipality.of(config)
        bh = m.business_hours
        self.tz = m.municipality.tz
        self.days = set(bh.weekdays)
        self.open = bh.open
        self.close = bh.close
        self.holidays = {d.isoformat() for d in bh.holidays}
        self.always_open = bh.always_open

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

    def next_open(self, now: datetime) -> datetime:
        """When people are next at work (``now`` itself if they are): the call-back promise."""
        if self.always_open or self.is_open(now):
            return now
        local = now.astimezone(self.tz)
        hour, minute = (int(x) for x in self.open.split(":"))
        for days in range(0, 15):
            day = (local + timedelta(days=days)).replace(hour=hour, minute=minute, second=0, microsecond=0)
            if day > local and self.is_open(day):
                return day
        return local

    def describe_next_open(self, now: datetime, lang: str) -> str:
        """"내일(금) 09:00", "월요일(12월 7일) 09:00", "today at 09:00": when people are back, in words."""
        when = self.next_open(now)
        local, nxt = now.astimezone(self.tz), when.astimezone(self.tz)
        days = (nxt.date() - local.date()).days
        hm = nxt.strftime("%H:%M")
        ko_days = "월화수목금토일"
        en_days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        if lang == "en":
            day = "today" if days == 0 else "tomorrow" if days == 1 else \
                f"{en_days[nxt.weekday()]} {nxt:%b} {nxt.day}"
            return f"{day} at {hm}"
        day = "오늘" if days == 0 else f"내일({ko_days[nxt.weekday()]})" if days == 1 else \
            f"{ko_days[nxt.weekday()]}요일({nxt.month}월 {nxt.day}일)"
        return f"{day} {hm}"


def priority_for(label: str, department: str | None) -> int:
    """Emergencies first, then safety, then everything else by waiting time."""
    if label == "conv.emergency":
        return PRIORITY_EMERGENCY
    if department == "safety":
        return PRIORITY_SAFETY
    return PRIORITY_NORMAL
