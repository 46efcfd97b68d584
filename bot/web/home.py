"""``GET /``: the demo home page of the municipality in ``config.yml``, with the chat widget.

It is the demo a newcomer opens after ``make run`` and the page the widget's browser tests audit.
It belongs to the web app, not to the web-chat channel (which serves the widget's files), and
shows only while that channel is on: without it the widget the page loads would not exist.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from bot.web import pages

router = APIRouter(include_in_schema=False)


def _pick(value: Any, lang: str = "ko") -> str:
    if isinstance(value, dict):
        return str(value.get(lang) or next(iter(value.values()), ""))
    return "" if value is None else str(value)


def home_context(config: dict[str, Any]) -> dict[str, str]:
    """The page's facts from ``config.yml`` (the template escapes them)."""
    m = config.get("municipality") or {}
    phone = _pick(m.get("phone"))
    website = _pick(m.get("website"))
    hours = config.get("business_hours") or {}
    return {"name": _pick(m.get("name")) or "구청", "name_en": _pick(m.get("name"), "en"),
            "address": _pick(m.get("address")), "phone": phone, "tel": re.sub(r"[^0-9+]", "", phone),
            "website": website if website.startswith(("https://", "http://")) else "",
            "opens": str(hours.get("open", "09:00")), "closes": str(hours.get("close", "18:00"))}


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    if "webchat" not in getattr(request.app.state, "channels", {}):
        raise HTTPException(status_code=404)
    return pages.page("home.html", lang="ko", **home_context(request.app.state.settings.config()))
