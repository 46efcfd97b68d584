"""One convention for every HTML page (issue 21, item 5): templates with a shared layout and
stylesheet, no inline style or script (so the CSP needs no 'unsafe-inline'), hostile text shown as
text, and the supervisor routes guarded by one dependency. Against the real app on uvicorn; the
browser part runs Chromium on a phone-sized screen with the CSP enforced (axe-core is loaded as a
same-origin file, so nothing needs the CSP bypassed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.responses import HTMLResponse

from bot.console.auth import create_agent
from bot.service_requests import RequestDraft
from bot.settings import ROOT, Settings
from crm_store.models import Conversation, Handoff, Interaction
from crm_store.timeutil import utcnow
from tests.channel_servers import ServerThread, console_client
from tests.fixtures_browser import AXE

SUP = ("web-sup", "web-conventions-pw-1")
AGENT = ("web-agent", "web-conventions-pw-2")
HOSTILE = '<script>alert("x")</script><b style="color:red" onclick="steal()">굵게</b><img src=x onerror=steal()>'
STYLESHEET = "/static/pcrm.css"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("web-conventions")
    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                              pcrm_model_dir=ROOT / "var" / "model"))
    create_agent(app.state.sessions, *SUP, role="supervisor")
    create_agent(app.state.sessions, *AGENT, role="agent", departments=["roads"])
    with app.state.sessions.begin() as s:
        conv = Conversation(key="webchat:hostile", channel="webchat")
        s.add(conv)
        s.flush()
        s.add(Interaction(conversation_id=conv.id, channel="webchat", direction="in", text=HOSTILE,
                          label="roads.pothole", confidence=0.2, entities=[], created_at=utcnow() - timedelta(hours=1)))
        handoff = Handoff(conversation_id=conv.id, department="roads", status="queued", summary=HOSTILE)
        s.add(handoff)
        s.flush()
        ids = {"conversation": conv.id, "handoff": handoff.id}
    store = app.state.engine.requests
    ticket = store.open(RequestDraft(service_code="roads.pothole", department="roads", channel="webchat",
                                     description="구멍", address_string="한빛동", lat=37.566, long=126.971)).ticket
    store.update_status(ticket, "in_progress", note=HOSTILE)  # a public note with markup in it
    srv = ServerThread(app).start()
    srv.ids = {**ids, "ticket": ticket}  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()


def logged_in(server: ServerThread, who: tuple[str, str] = SUP) -> Any:
    return console_client(server, who)


def public_pages(ids: dict[str, Any]) -> list[str]:
    return ["/", "/transparency", "/transparency?lang=en", "/status", "/status?lang=en",
            f"/status?ticket={ids['ticket']}", f"/status?ticket={ids['ticket']}&lang=en", "/status?ticket=2026-999999",
            "/status/map", "/status/map?lang=en&service=roads.pothole"]


def staff_pages(ids: dict[str, Any]) -> list[str]:
    return ["/supervisor", "/supervisor?direction=in&q=script&period=week&group=department",
            f"/supervisor/conversations/{ids['conversation']}", "/console", "/console/wallboard", "/console/stats",
            f"/console/conversations/{ids['conversation']}", f"/console/handoffs/{ids['handoff']}", "/console/kb"]


class Inline(HTMLParser):
    """What a strict CSP would block, found by parsing (an escaped ``style=`` in text is not one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.stylesheets: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "style":
            self.found.append("<style> element")
        if tag == "script":
            self._in_script = True
            if not a.get("src"):
                self.found.append("inline <script>")
        if tag == "link" and a.get("rel") == "stylesheet":
            self.stylesheets.append(a.get("href") or "")
        for name, value in attrs:
            if name == "style":
                self.found.append(f"style= on <{tag}>")
            if name.startswith("on"):
                self.found.append(f"{name}= on <{tag}>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL on <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("script content")
        self.text.append(data)


def parse(page: str) -> Inline:
    p = Inline()
    p.feed(page)
    p.close()
    return p


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def assert_strict_csp(header: str, path: str) -> None:
    d = csp_directives(header)
    assert d.get("default-src") == ["'self'"], (path, header)
    for directive in ("script-src", "style-src"):
        sources = d.get(directive, d.get("default-src"))
        assert sources == ["'self'"], (path, directive, header)  # no 'unsafe-inline', hashes, data: or hosts
    assert d.get("object-src") == ["'none'"] and d.get("base-uri") == ["'none'"], (path, header)
    assert d.get("frame-ancestors") == ["'none'"], (path, header)


def test_no_page_has_inline_style_or_script_and_the_csp_forbids_them(server: ServerThread) -> None:
    ids = server.ids  # type: ignore[attr-defined]
    with logged_in(server) as c:
        for path in public_pages(ids) + staff_pages(ids):
            r = c.get(path)
            assert r.headers["content-type"].startswith("text/html"), path
            assert r.status_code == (404 if "999999" in path else 200), (path, r.status_code)
            page = parse(r.text)
            assert page.found == [], (path, page.found)
            # the one shared stylesheet; the demo home page stands in for the city's own site
            assert page.stylesheets[:1] == (["/webchat/home.css"] if path == "/" else [STYLESHEET]), path
            assert re.search(r'<html lang="(ko|en)">', r.text), path
            assert_strict_csp(r.headers["content-security-policy"], path)


def test_hostile_text_stays_text(server: ServerThread) -> None:
    ids = server.ids  # type: ignore[attr-defined]
    shown = [f"/supervisor/conversations/{ids['conversation']}", "/supervisor?q=script",
             f"/console/conversations/{ids['conversation']}", f"/status?ticket={ids['ticket']}"]
    with logged_in(server) as c:
        for path in shown:
            r = c.get(path)
            assert "<script>alert" not in r.text and "<b style" not in r.text and "<img src=x" not in r.text, path
            assert "&lt;script&gt;alert" in r.text, path  # escaped once, not dropped and not doubled
            assert any('<script>alert("x")</script>' in t for t in parse(r.text).text), path
        r = c.get("/supervisor", params={"q": '"><script>alert(1)</script>', "channel": "<b>"})
        assert r.status_code == 200 and parse(r.text).found == []
        assert '&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;' in r.text  # the search box keeps the text


def test_the_shared_stylesheet_is_a_file_and_the_old_css_addresses_serve_it(server: ServerThread) -> None:
    sheet = httpx.get(server.url + STYLESHEET, timeout=30)
    assert sheet.status_code == 200 and sheet.headers["content-type"].startswith("text/css")
    assert "header.top" in sheet.text and ".cards" in sheet.text and "body.public" in sheet.text
    for old in ("/console/static/console.css", "/supervisor/supervisor.css", "/transparency.css", "/status.css"):
        r = httpx.get(server.url + old, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/css"), old
        assert r.text == sheet.text, old


def test_every_supervisor_route_declares_the_supervisor_dependency() -> None:
    """The check lives in one dependency; a route without it would be open to anyone."""
    from bot.supervisor.access import require_supervisor, require_supervisor_page
    from bot.supervisor.routes import router

    guarded = {require_supervisor, require_supervisor_page}
    routes = [r for r in router.routes if not r.path.endswith(".css")]  # type: ignore[attr-defined]
    assert len(routes) == 6
    for route in routes:
        calls = [d.call for d in route.dependant.dependencies]  # type: ignore[attr-defined]
        assert calls and calls[0] in guarded, route.path  # first: no filter error before the 401
        page = route.response_class is HTMLResponse  # type: ignore[attr-defined]
        assert (calls[0] is require_supervisor_page) == page, route.path


def test_the_dependency_answers_as_the_checks_did(server: ServerThread) -> None:
    ids = server.ids  # type: ignore[attr-defined]
    url = server.url
    for path in ("/supervisor", f"/supervisor/conversations/{ids['conversation']}"):
        r = httpx.get(url + path + "?from=junk", headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=%2Fsupervisor")
        assert r.content == b""
        r = httpx.get(url + path)  # a script: 401 with a Basic challenge, before the bad date is looked at
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert r.json() == {"detail": "login required"}
    for path in ("/supervisor/kpis.json", "/supervisor/interactions.csv", "/supervisor/unrecognised.yml"):
        r = httpx.get(url + path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 401, path  # data, not a page: never a redirect
    with logged_in(server, AGENT) as c:
        for path in ("/supervisor", "/supervisor/kpis.json", f"/supervisor/conversations/{ids['conversation']}"):
            r = c.get(path)
            assert r.status_code == 403 and r.json() == {"detail": "supervisors and admins only"}, path
    with logged_in(server) as c:
        r = c.get("/supervisor/kpis.json?from=junk")
        assert r.status_code == 400 and "from and to" in r.json()["detail"]


# ---------------------------------------------------------------------------- browser

def axe_serious(pg: Any) -> list[str]:
    pg.add_script_tag(url="/__axe.js")  # same origin: allowed by script-src 'self'
    result = pg.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.browser
def test_pages_on_a_phone_under_the_enforced_csp(browser: Any, server: ServerThread) -> None:
    ids = server.ids  # type: ignore[attr-defined]
    ctx = browser.new_context(base_url=server.url, locale="ko-KR", viewport={"width": 390, "height": 844},
                              is_mobile=True, has_touch=True)
    ctx.route("**/__axe.js", lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"))
    pg = ctx.new_page()
    blocked: list[str] = []
    pg.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    pg.on("pageerror", lambda e: blocked.append(str(e)))
    try:
        pg.goto(f"/supervisor/conversations/{ids['conversation']}")  # not logged in: the login, then back
        pg.wait_for_url("**/console/login**")
        pg.get_by_label("아이디").fill(SUP[0])
        pg.get_by_label("비밀번호").fill(SUP[1])
        pg.get_by_role("button", name="로그인").click()
        pg.wait_for_url(f"**/supervisor/conversations/{ids['conversation']}")
        pages = [f"/supervisor/conversations/{ids['conversation']}", "/supervisor", *public_pages(ids)[1:3],
                 f"/status?ticket={ids['ticket']}", "/status/map?lang=en"]
        for path in pages:
            pg.goto(path)
            assert pg.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(244, 246, 248)", path
            assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
            assert pg.locator("h1").count() == 1, path
            bad = axe_serious(pg)
            assert bad == [], (path, bad)
        pg.goto(f"/supervisor/conversations/{ids['conversation']}")
        assert '<script>alert("x")</script>' in pg.locator("td.text").first.inner_text()
        assert pg.evaluate("document.querySelectorAll('main script, main img, main b').length") == 0
        assert blocked == [], blocked
    finally:
        ctx.close()
