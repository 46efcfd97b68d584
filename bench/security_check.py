"""Black-box security check (issue 18) against a fresh ``pcrm serve``: prints one line per check
and exits 0 only if every check holds.

    .venv/bin/python bench/security_check.py            # starts its own server (temporary SQLite)
    .venv/bin/python bench/security_check.py --url URL --user U --password P   # an existing server

Checks: repeated wrong one-time codes and wrong passwords are answered 429, the right password is
refused during the lockout, an old session cookie is refused after logout, residents' files are
refused to anonymous callers, the public Open311 feed shows no phone or resident-registration
digits in any of the variants, the XML feed parses after hostile input, deep JSON gets a 4xx on
every POST endpoint, and every HTML page carries CSP, framing and nosniff headers.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["０１０－９８７６－５４３２", "010–9876–5432", "(010)9876-5432", "010 9876 5432", "0 1 0 9 8 7 6 5 4 3 2",
            "+1 415 555 2671", "+44 20 7946 0958", "900101-1234567", "９００１０１－１２３４５６７"]
#: Digits that must not appear in the public feed (the middle and end of every variant above).
SECRETS = ["9876", "９８７６", "5432", "５４３２", "9 8 7 6", "415 555", "2671", "7946", "0958", "1234567",
           "１２３４５６７", "900101", "９００１０１"]
HTML_PAGES = ["/", "/console/login", "/console", "/supervisor", "/transparency", "/docs", "/redoc", "/status",
              "/status/map", "/field/"]
DEEP = b"[" * 40_000 + b"]" * 40_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, fn: Callable[[], str | None]) -> None:
        try:
            detail = fn() or ""
            ok = True
        except AssertionError as exc:
            ok, detail = False, str(exc) or "assertion failed"
        except Exception as exc:  # noqa: BLE001 - a check that crashes has failed
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'  (' + detail + ')' if detail else ''}", flush=True)


def login(base: str, user: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    c = httpx.Client(base_url=base, timeout=30)
    c.get("/console/login")
    r = c.post("/console/login", data={"username": user, "password": password, "csrf_token": c.cookies["pcrm_csrf"]})
    return c, r


def run_checks(base: str, user: str, password: str, open311_key: str) -> bool:
    k = Checks()
    http = httpx.Client(base_url=base, timeout=60)

    def otp() -> str:
        key = secrets.token_urlsafe(32)
        body = {"channel": "webchat", "sender_key": key, "phone": "010-2468-1357"}
        assert http.post("/api/identity/otp", json=body).status_code == 200
        codes = [http.post("/api/identity/otp/verify", json={**body, "code": f"{i}{i}{i}{i}{i}{i}"}).status_code
                 for i in range(7)]
        assert codes[:5] == [400] * 5 and codes[5:] == [429, 429], codes
        issued = [http.post("/api/identity/otp", json={**body, "sender_key": secrets.token_urlsafe(32)}).status_code
                  for _ in range(4)]
        assert 429 in issued, issued
        return f"verify answers {codes}; further codes to the number {issued}"

    def passwords() -> str:
        c, r = login(base, user, password)  # a working login first, to show the lockout is what refuses later
        assert r.status_code == 303, r.status_code
        wrong = [login(base, user, f"wrong-{i}-password")[1].status_code for i in range(6)]
        _, right = login(base, user, password)
        assert wrong[:5] == [401] * 5 and wrong[5] == 429 and right.status_code == 429, (wrong, right.status_code)
        assert int(right.headers.get("retry-after", "0")) > 0
        return f"wrong {wrong}, right password during lockout {right.status_code}"

    def logout_kills_cookie(c: httpx.Client) -> str:
        assert c.get("/console/api/me").status_code == 200
        captured = c.cookies["pcrm_console"]
        assert c.post("/console/logout", data={"csrf_token": c.cookies["pcrm_csrf"]}).status_code == 303
        thief = httpx.Client(base_url=base, timeout=30, cookies={"pcrm_console": captured})
        status = thief.get("/console/api/me").status_code
        assert status == 401, status
        return f"old cookie after logout: {status}"

    def files() -> str:
        statuses = [http.get(f"/webhooks/telegram/file/AgAC{x}").status_code for x in ("AAAA1234", "photo0001")]
        assert all(s in (401, 403) for s in statuses), statuses
        return f"anonymous: {statuses}"

    def feed(staff: httpx.Client) -> str:
        text = "우리 집 앞 도로 " + ", ".join(VARIANTS)
        r = http.post("/open311/v2/requests.json", data={"service_code": "roads.pothole", "description": text,
                                                         "address_string": "한빛동 1 " + VARIANTS[0]},
                      headers={"X-API-Key": open311_key})
        assert r.status_code == 201, r.text
        ticket = r.json()[0]["service_request_id"]
        note = staff.post(f"/console/api/requests/{ticket}/status", json={"status": "in_progress", "note": text},
                          headers={"X-CSRF-Token": staff.cookies["pcrm_csrf"]})
        assert note.status_code == 200, note.text
        views = (f"/open311/v2/requests/{ticket}.json", f"/open311/v2/requests/{ticket}.xml",
                 "/open311/v2/requests.json", "/open311/v2/requests.xml")
        bodies = [http.get(p).text for p in views]
        for body in bodies:
            leaked = [s for s in SECRETS if s in body]
            assert not leaked, leaked
        assert "in_progress" in bodies[0] or "open" in bodies[0]
        return f"{len(VARIANTS)} variants in description, address and a staff note; none in 4 public views"

    def xml_after_hostile() -> str:
        hostile = "구멍\x00\x01\x08\x0b\x1b[31m\ufffe 있어요"
        statuses = [http.post("/open311/v2/requests.xml", data={"service_code": "roads.pothole", "description": hostile,
                                                                "address_string": "한빛동 2"},
                              headers={"X-API-Key": open311_key}).status_code,
                    http.post("/webhooks/rest/webhook", json={"sender": "hostile-xml", "message": hostile}).status_code]
        for path in ("/open311/v2/requests.xml", "/open311/v2/services.xml"):
            ET.fromstring(http.get(path).content)
            ET.fromstring(http.get(path, headers={"X-API-Key": open311_key}).content)
        return f"hostile POSTs answered {statuses}; feeds parse"

    def deep_json(staff: httpx.Client) -> str:
        spec = http.get("/openapi.json").json()
        paths = ["/console/login", "/console/logout"] + [
            re.sub(r"\{[^}]+\}", "1", p.replace("{fmt}", "json")) for p, ops in spec["paths"].items() if "post" in ops]
        bad = []
        for p in paths:
            s = staff.post(p, content=DEEP, headers={"content-type": "application/json",
                                                     "x-csrf-token": staff.cookies.get("pcrm_csrf", "")}).status_code
            if not 400 <= s < 500:
                bad.append((p, s))
        assert not bad, bad
        return f"{len(paths)} POST endpoints, all 4xx"

    def headers(staff: httpx.Client) -> str:
        for page in HTML_PAGES:
            r = staff.get(page, follow_redirects=True)  # as a supervisor: /supervisor and /console render
            csp = r.headers.get("content-security-policy", "")
            assert r.headers.get("content-type", "").startswith("text/html"), page
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, (page, csp)
            assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0], page
            assert r.headers.get("x-content-type-options") == "nosniff", page
            assert r.headers.get("x-frame-options") == "DENY", page
        return f"{len(HTML_PAGES)} pages"

    k.check("one-time codes: 5 wrong, then 429; issuing limited", otp)
    staff, r = login(base, user, password)
    assert r.status_code == 303, f"cannot log in as {user}: {r.status_code}"
    k.check("HTML pages carry CSP, framing and nosniff", lambda: headers(staff))
    k.check("residents' files refused to anonymous callers", files)
    k.check("public feed shows no phone or RRN digits", lambda: feed(staff))
    k.check("XML feed parses after hostile input", xml_after_hostile)
    k.check("deep JSON gets 4xx on every endpoint", lambda: deep_json(staff))
    k.check("old session cookie refused after logout", lambda: logout_kills_cookie(staff))
    k.check("wrong passwords answered 429; right password refused during lockout", passwords)
    failed = [n for n, ok, _ in k.results if not ok]
    print(f"{len(k.results) - len(failed)}/{len(k.results)} checks hold" + (f"; FAILED: {failed}" if failed else ""))
    return not failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url")
    ap.add_argument("--user", default="checker-sup")
    ap.add_argument("--password", default="checker-" + secrets.token_urlsafe(12))
    ap.add_argument("--open311-key")
    args = ap.parse_args(argv)
    if args.url:
        return 0 if run_checks(args.url.rstrip("/"), args.user, args.password, args.open311_key or "") else 1
    tmp = Path(tempfile.mkdtemp(prefix="pcrm-seccheck-"))
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'pcrm.db'}", "PCRM_SECRET_FILE": str(tmp / "secret_key"),
           "OPEN311_KEYS_FILE": str(tmp / "keys.json"), "OPEN311_API_KEYS": key, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    pcrm = [sys.executable, "-m", "bot.cli"]
    subprocess.run([*pcrm, "users", "add", args.user, "--role", "supervisor", "--password", args.password],
                   env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    port = _free_port()
    server = subprocess.Popen([*pcrm, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("FAIL  server did not start")
                return 1
            time.sleep(0.5)
        return 0 if run_checks(base, args.user, args.password, key) else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
