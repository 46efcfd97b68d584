"""``GET /``: the demo home page of the municipality in ``config.yml``, with the chat widget.

It is the demo a newcomer opens after ``make run`` and the page the widget's browser tests audit.
It belongs to the web app, not to the web-chat channel (which serves the widget's files), and
shows only while that channel is on: without it the widget the page loads would not exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from bot.municipality import Municipality
from bot.web import pages

router = APIRouter(include_in_schema=False)


def home_context(config: Municipality | Mapping[str, Any]) -> dict[str, str]:
    """The page's facts from ``config.yml`` (the template escapes them)."""
    c = Municipality.of(config)
    m, hours = c.municipality, c.business_hours
    phone, website = m.phone or "", m.website or ""
    return {"name": m.name.get("ko", m.name.en) or "구청", "name_en": m.name.get("en", m.name.ko),
            "address": m.address.get("ko", m.address.en), "phone": phone, "tel": re.sub(r"[^0-9+]", "", phone),
            "website": website if website.startswith(("https://", "http://")) else "",
            "opens": hours.open, "closes": hours.close}


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    if "webchat" not in getattr(request.app.state, "channels", {}):
        raise HTTPException(status_code=404)
    return pages.page("home.html", lang="ko", **home_context(request.app.state.settings.municipality()))
