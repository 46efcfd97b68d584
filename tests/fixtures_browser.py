"""Headless Chromium for page tests, and the axe-core accessibility check they share.

``browser``: Debian's Chromium driven by Playwright (never a downloaded browser).
:func:`serious_violations`: axe-core findings of impact serious or critical.
Without Chromium, Playwright or axe-core (``npm install``) the tests skip with the
reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.settings import ROOT

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def require(ok: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) when a tool the test needs is missing."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in the
    main thread while it lives, which would break ``asyncio.run`` in later test modules."""
    require(CHROMIUM.exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    require(AXE.exists(), f"axe-core not found at {AXE} (run `npm install` in the repository)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        require(False, "the playwright Python package is not installed")
        raise
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def serious_violations(page: Any) -> list[str]:
    """axe-core violations of impact serious or critical, one readable line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


# --- driving the web-chat widget ------------------------------------------------------------------
WIDGET_TIMEOUT_MS = 60_000


def bot_texts(pg: Any) -> list[str]:
    """Every bot message shown in the widget, oldest first."""
    return pg.locator(".pcrm-wc-msg.pcrm-wc-bot .pcrm-wc-text").all_text_contents()


def wait_reply(pg: Any, before: int) -> str:
    """The bot's new text once more than ``before`` messages show and it stopped typing."""
    pg.wait_for_function(
        "n => document.querySelectorAll('.pcrm-wc-msg.pcrm-wc-bot').length > n"
        " && document.querySelector('.pcrm-wc-typing').hidden", arg=before, timeout=WIDGET_TIMEOUT_MS)
    pg.wait_for_timeout(400)  # a turn may have several replies
    return "\n".join(bot_texts(pg)[before:])


def ask(pg: Any, text: str, box_label: str = "메시지 입력") -> str:
    """Type a message into the widget (its input labelled ``box_label``: "Your message" in
    English), press Enter, and return the bot's new text."""
    before = len(bot_texts(pg))
    box = pg.get_by_label(box_label)
    box.fill(text)
    box.press("Enter")
    return wait_reply(pg, before)
