"""The conventions every HTML page of the web app follows (issue 21, item 5).

* **Templates, one environment** (:mod:`bot.web.pages`): Jinja2 with autoescape on for every
  template, so a resident's or an agent's text is always text; every page extends
  ``layout.html`` (the console's ``base.html`` and the public ``public.html`` do).
* **One stylesheet** (``bot/web/static/pcrm.css``), a file served at :data:`~bot.web.pages.STYLESHEET_URL`;
  no ``<style>``, no ``style=`` attribute and no inline ``<script>`` in any page, so the
  Content-Security-Policy (:mod:`bot.security_headers`) needs no ``'unsafe-inline'``.
* **Authentication as dependencies**: a route states who may call it in its signature
  (``Depends(require_supervisor)``, ``Depends(require_user)``) instead of checking in its body;
  a page route's dependency may answer instead of the page (:class:`~bot.web.pages.PageResponse`:
  the login redirect, a 403 page).
"""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    """The shared stylesheet's route, the demo home page and the login redirect's handler, on
    ``app`` (``create_app``, after the channels: the home page shows while web chat is on)."""
    from bot.web.home import router as home_router
    from bot.web.pages import PageResponse, page_response, router

    app.include_router(router)
    app.include_router(home_router)
    app.add_exception_handler(PageResponse, page_response)
