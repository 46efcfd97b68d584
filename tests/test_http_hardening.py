"""HTTP-level hardening (issue 18): headers on every HTML page, offline API docs, body and JSON
limits before parsing, WebSocket frame size, secrets out of logs and out of the code, the REST
token and ``pcrm doctor``. Against the real app on a real uvicorn (as ``pcrm serve`` runs it)."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bot.console.auth import create_agent
from bot.settings import ROOT, Settings
from bot.webchat_keys import new_key, protocols_for
from tests.channel_servers import ServerThread, console_client
from tests.fixtures_browser import ask, bot_texts

SUP = ("sup-hard", "supervisor-hardening-pw")
DEEP = b"[" * 40_000 + b"]" * 40_000
DEEP_OBJ = b'{"a":' * 40_000 + b"1" + b"}" * 40_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("hardening")
    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None,
                              pcrm_model_dir=ROOT / "var" / "model", kakao_skill_secret="k-secret",
                              telegram_bot_token="123:ABC", telegram_webhook_secret="tg-secret",
                              telegram_api_base_url="http://127.0.0.1:9"))
    create_agent(app.state.sessions, *SUP, role="supervisor")
    s = ServerThread(app).start()
    s.app = app  # type: ignore[attr-defined]
    yield s
    s.stop()


def staff(server: ServerThread) -> Any:
    """An HTTP client logged in as a supervisor."""
    return console_client(server, SUP, timeout=30)


HTML_PAGES = ["/", "/console/login", "/transparency", "/transparency?lang=en", "/docs", "/redoc", "/supervisor",
              "/status", "/status/map", "/field/",
              "/console"]


def test_every_html_page_carries_csp_framing_and_nosniff(server: ServerThread) -> None:
    """/supervisor and /transparency lacked CSP, framing and nosniff headers."""
    with staff(server) as c:
        for path in HTML_PAGES:
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            csp = r.headers.get("content-security-policy", "")
            script_src = re.search(r"script-src ([^;]*)", csp)
            assert script_src and "unsafe-inline" not in script_src.group(1), (path, csp)
            assert "frame-ancestors 'none'" in csp, path
            assert r.headers.get("x-frame-options") == "DENY", path
            assert r.headers.get("x-content-type-options") == "nosniff", path
            assert r.headers.get("referrer-policy"), path
            assert "<script>" not in r.text and not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text), path
            if path.startswith(("/", "/transparency")) and not path.startswith(("/docs", "/redoc")):
                assert "<style" not in r.text and " style=" not in r.text, path
            if path.startswith(("/console", "/supervisor", "/docs", "/redoc")):
                assert "no-store" in r.headers.get("cache-control", ""), path


def test_api_docs_are_served_from_the_package_not_a_cdn(server: ServerThread) -> None:
    """/docs loaded Swagger UI from a CDN: blank offline, a third-party script on the console's origin."""
    for path in ("/docs", "/redoc"):
        page = httpx.get(server.url + path, timeout=10).text
        assert "cdn." not in page and "unpkg" not in page and "http" not in page.replace("http-equiv", "")
        for src in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert src.startswith("/"), src
            assert httpx.get(server.url + src, timeout=10).status_code == 200, src


def post_endpoints(server: ServerThread) -> list[str]:
    """Every POST of the OpenAPI document (path parameters filled in), plus the console's forms."""
    spec = server.app.openapi()  # type: ignore[attr-defined]
    out = ["/console/login", "/console/logout"]
    for path, ops in spec["paths"].items():
        if "post" in ops:
            out.append(re.sub(r"\{[^}]+\}", "1", path.replace("{fmt}", "json")))
    return out


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJ], ids=["array", "object"])
def test_deep_json_gets_4xx_on_every_endpoint(server: ServerThread, body: bytes) -> None:
    """40,000 levels gave a 500 on Open311 and Kakao and dropped the REST connection."""
    headers = {"content-type": "application/json", "x-kakao-skill-secret": "k-secret",
               "x-telegram-bot-api-secret-token": "tg-secret"}
    paths = post_endpoints(server)
    assert "/webhooks/rest/webhook" in paths and "/open311/v2/requests.json" in paths and "/webhooks/kakao" in paths
    with staff(server) as c:
        headers["x-csrf-token"] = c.cookies["pcrm_csrf"]
        for path in paths:
            r = c.post(path, content=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])


def test_deep_json_frame_gets_an_error_frame_and_the_socket_lives(server: ServerThread) -> None:
    url = server.url.replace("http://", "ws://") + "/webchat/ws"
    with connect(url, subprotocols=protocols_for(new_key()), open_timeout=30) as ws:
        ws.send("[" * 30_000 + "]" * 30_000)
        frame = json.loads(ws.recv(timeout=30))
        assert frame["type"] == "error" and "deep" in frame["reason"]
        ws.send(json.dumps({"type": "message", "text": "안녕하세요"}))
        assert json.loads(ws.recv(timeout=60))["type"] == "typing"


def test_chunked_body_over_the_limit_gets_413(server: ServerThread) -> None:
    """Chunked bodies over the limit got 400 instead of 413."""
    def chunks() -> Iterator[bytes]:
        yield b'{"sender":"chunky","message":"'
        for _ in range(40):
            yield b"a" * 10_000
        yield b'"}'

    r = httpx.post(server.url + "/webhooks/rest/webhook", content=chunks(),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413


def test_websocket_frames_over_64_kib_are_refused_before_buffering(server: ServerThread) -> None:
    """Web-chat frames up to 16 MiB were buffered before the size check."""
    url = server.url.replace("http://", "ws://") + "/webchat/ws"
    with connect(url, subprotocols=protocols_for(new_key()), open_timeout=30, max_size=None) as ws:
        ws.send("x" * (1024 * 1024))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # message too big


def test_secrets_in_query_strings_never_reach_the_log() -> None:
    """The Open311 api_key and web-chat session ids appeared in access logs."""
    from bot.logging_setup import PiiMaskingFilter

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/open311/v2/requests.json?api_key=SEKRIT&x=1"
                                "&session=wABC&sig=ff00&code=123456", "1.1", 200), None)
    PiiMaskingFilter().filter(record)
    line = record.getMessage()
    for secret in ("SEKRIT", "wABC", "ff00", "123456"):
        assert secret not in line, line
    assert "x=1" in line


def test_rest_channel_can_require_a_token(tmp_path: Path) -> None:
    """The REST channel let anyone act as any sender with no way to require a token."""
    from fastapi.testclient import TestClient

    from bot.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", redis_url=None,
                              pcrm_model_dir=ROOT / "var" / "model", pcrm_rest_token="tok-123"))
    c = TestClient(app)
    body = {"sender": "someone-else", "message": "안녕하세요"}
    assert c.post("/webhooks/rest/webhook", json=body).status_code == 401
    assert c.post("/webhooks/rest/webhook", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    ok = c.post("/webhooks/rest/webhook", json=body, headers={"Authorization": "Bearer tok-123"})
    assert ok.status_code == 200 and ok.json()


def test_without_a_secret_key_each_installation_gets_its_own_random_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The server started silently with the default PCRM_SECRET_KEY (a constant in the source)."""
    import bot.secret_key as sk

    monkeypatch.delenv("PCRM_SECRET_KEY", raising=False)
    monkeypatch.setattr(sk, "_cache", {})
    a = Settings(pcrm_model_dir=tmp_path / "a" / "model")
    b = Settings(pcrm_model_dir=tmp_path / "b" / "model")
    again = Settings(pcrm_model_dir=tmp_path / "a" / "model")
    assert a.secret_generated and len(a.pcrm_secret_key) >= 40
    assert a.pcrm_secret_key != b.pcrm_secret_key and again.pcrm_secret_key == a.pcrm_secret_key
    path = tmp_path / "a" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "dev-insecure" not in (ROOT / "bot" / "settings.py").read_text(encoding="utf-8")
    assert not Settings(pcrm_secret_key="set-by-operator").secret_generated


def test_doctor_lists_what_production_lacks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    from bot.cli import main

    for var in ("PCRM_SECRET_KEY", "PCRM_REST_TOKEN", "PCRM_PUBLIC_URL", "PCRM_BACKUP_CONFIRMED", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPEN311_KEYS_FILE", str(tmp_path / "none.json"))
    assert main(["doctor", "--json"]) == 0
    items = {f["item"] for f in json.loads(capsys.readouterr().out)}
    assert {"PCRM_SECRET_KEY", "PCRM_REST_TOKEN", "PCRM_PUBLIC_URL", "backups", "DATABASE_URL"} <= items
    assert main(["doctor", "--strict"]) == 1
    monkeypatch.setenv("PCRM_SECRET_KEY", "x" * 40)
    monkeypatch.setenv("PCRM_REST_TOKEN", "t" * 40)
    monkeypatch.setenv("PCRM_PUBLIC_URL", "https://pcrm.example.kr")
    monkeypatch.setenv("PCRM_BACKUP_CONFIRMED", "1")
    capsys.readouterr()
    assert main(["doctor", "--json"]) == 0
    left = {f["item"] for f in json.loads(capsys.readouterr().out)}
    assert not {"PCRM_SECRET_KEY", "PCRM_REST_TOKEN", "PCRM_PUBLIC_URL", "backups"} & left



# --- the pages work under their real CSP (the other browser tests bypass it to inject axe-core) ---

@pytest.mark.browser
def test_pages_work_under_their_csp_in_chromium(browser: Any, server: ServerThread) -> None:
    """Inline styles and scripts moved to files: nothing is blocked, the widget chats, /docs renders,
    and a reload redraws the conversation from history (the key travels in a header)."""
    context = browser.new_context(base_url=server.url, locale="ko-KR")
    context.set_default_timeout(60_000)
    pg = context.new_page()
    blocked: list[str] = []
    pg.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    pg.on("pageerror", lambda e: blocked.append(str(e)))
    try:
        pg.goto("/")
        assert pg.evaluate("getComputedStyle(document.querySelector('header.site')).backgroundColor") \
            == "rgb(11, 61, 120)"  # home.css applied
        pg.get_by_role("button", name="민원 상담").click()
        assert "구청" in ask(pg, "민원실 몇 시까지 해요?") or bot_texts(pg)
        pg.reload()  # the conversation is redrawn from the history (fetched with the key in a header)
        pg.wait_for_function("() => [...document.querySelectorAll('.pcrm-wc-msg')]"
                             ".some(m => m.textContent.includes('민원실 몇 시까지 해요?'))")
        for path in ("/transparency", "/console/login", "/docs"):
            pg.goto(path)
        pg.wait_for_selector("#swagger-ui .information-container", timeout=60_000)
        assert blocked == [], blocked
    finally:
        context.close()
