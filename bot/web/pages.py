"""One way to answer with an HTML page: the template environment, the stylesheet, the page helpers.

Why one environment: the console, the knowledge-base editor, the supervisor dashboard and the
public pages each had their own (or rendered f-strings with ``html.escape`` by hand, where one
forgotten call is a stored XSS). Here autoescape is on for every template whatever its name, and
the templates of the console (``bot/console/templates``) and of the rest of the web layer
(``bot/web/templates``) share ``layout.html``.

Why a file for the CSS: the Content-Security-Policy allows styles from files only. The old
per-module stylesheet URLs (``/console/static/console.css``, ``/supervisor/supervisor.css``,
``/transparency.css``, ``/status.css``) still answer with the same file, for pages a browser
cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
STYLESHEET = HERE / "static" / "pcrm.css"
STYLESHEET_URL = "/static/pcrm.css"
TEMPLATE_DIRS = (HERE / "templates", HERE.parent / "console" / "templates")

templates = Environment(
    loader=ChoiceLoader([FileSystemLoader(str(d)) for d in TEMPLATE_DIRS]),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
templates.globals["stylesheet_url"] = STYLESHEET_URL

router = APIRouter(include_in_schema=False)


def render(name: str, /, **ctx: Any) -> str:
    """``name`` rendered with ``ctx`` (autoescaped)."""
    return templates.get_template(name).render(**ctx)


def page(name: str, /, status_code: int = 200, headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    """A page without a login (the security headers are added by :mod:`bot.security_headers`)."""
    return HTMLResponse(render(name, **ctx), status_code=status_code, headers=headers)


def public_page(request: Request, name: str, lang: str, /, switch_query: str = "", status_code: int = 200,
                headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    """A page for residents (``public.html``) in ``lang``, with the office's name from ``config.yml``
    and a link to the same page in the other language (``switch_query``: this page's other
    parameters, already URL-encoded, without ``lang``)."""
    other = "en" if lang == "ko" else "ko"
    switch = f"{request.url.path}?{switch_query + '&' if switch_query else ''}lang={other}"
    return page(name, status_code, headers, lang=lang, site=site_name(request, lang), switch_href=switch,
                current=request.url.path, **ctx)


def site_name(request: Request, lang: str) -> str:
    """The municipality's name in ``lang`` (``config.yml`` ``municipality.name``)."""
    name = request.app.state.engine.knowledge.municipality.municipality.name
    return name.get(lang, name.ko or name.en)


def stylesheet_response() -> Response:
    """The shared stylesheet (revalidated: a deploy's change is seen at once, unchanged it is a 304)."""
    return FileResponse(STYLESHEET, media_type="text/css; charset=utf-8", headers={"Cache-Control": "no-cache"})


def staff_page(request: Request, name: str, user: Any, /, status_code: int = 200,
               headers: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    """A staff page (console, supervisor): ``user`` and a CSRF token for its forms (the logout
    button in the header), the CSRF cookie set when it was missing or stale."""
    from bot.console import auth

    token, fresh = auth.csrf_token_for(request, user)
    resp = page(name, status_code, headers, user=user, csrf_token=token, **ctx)
    if fresh:
        auth.set_cookie(resp, request, auth.CSRF_COOKIE, token)
    return resp


@router.get(STYLESHEET_URL)
def stylesheet() -> Response:
    return stylesheet_response()


# --- page dependencies: answer with a redirect or an error page instead of the page -------------

class PageResponse(HTTPException):
    """Raised by a page's auth dependency to answer with ``response`` (a login redirect, a 403
    page) instead of the page, so the route itself only ever renders its page.

    An :class:`HTTPException` of the same status, so without the handler below (a bare app)
    the answer is still a refusal; with it, the response itself."""

    def __init__(self, response: Response) -> None:
        location = response.headers.get("location")
        super().__init__(status_code=response.status_code, headers={"Location": location} if location else None)
        self.response = response


class LoginRedirect(PageResponse):
    """A browser without credentials: to the console login, and back to ``target`` after it."""

    def __init__(self, target: str) -> None:
        super().__init__(RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303))


def page_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageResponse)
    return exc.response


def wants_login_page(request: Request) -> bool:
    """A browser (asks for HTML, sends no credentials of its own): show it the login form, not a 401."""
    return "text/html" in request.headers.get("accept", "") and "authorization" not in request.headers


def here(request: Request) -> str:
    """This request's path and query, to come back to after the login."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")
