"""Real parts for the Twilio channel tests.

* :func:`start_app`: the whole app (``create_app``) under uvicorn on 127.0.0.1 with a
  temporary SQLite database, a Twilio auth token, ``PCRM_PUBLIC_URL`` = the server's
  own URL, and an engine whose clock the test sets (business hours or not).
* :meth:`TwilioApp.post`: a webhook request signed exactly as Twilio signs it
  (``RequestValidator(token).compute_signature(url, params)``).
* :class:`FakeTwilioApi`: a tiny real HTTP server standing in for Twilio's REST API
  (``POST /2010-04-01/Accounts/<sid>/Messages.json``); it records what it received.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import httpx
from twilio.request_validator import RequestValidator

from bot.settings import ROOT, Settings
from tests.channel_servers import ServerThread

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
FROM_NUMBER = "+15005550006"
SEOUL = ZoneInfo("Asia/Seoul")
#: A Wednesday that is no holiday: 10:00 is business hours, 22:00 is not.
OPEN = datetime(2026, 3, 4, 10, 0, tzinfo=SEOUL)
CLOSED = datetime(2026, 3, 4, 22, 0, tzinfo=SEOUL)


def sid(prefix: str) -> str:
    """A Twilio-shaped id (``SM…``, ``CA…``, ``RE…``)."""
    return prefix + uuid.uuid4().hex


def xml_root(response: httpx.Response) -> ET.Element:
    """The TwiML document of a webhook answer (asserting it is XML)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml"), response.headers
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    return root


@dataclass
class FakeTwilioApi:
    """Twilio's Messages API, as far as ``messages.create`` needs it."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 201

    def start(self) -> FakeTwilioApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                auth = self.headers.get("Authorization", "")
                user = base64.b64decode(auth.split(" ", 1)[1]).decode().split(":", 1) if " " in auth else []
                api.requests.append({"path": self.path, "form": form, "auth": user})
                body: dict[str, Any] = {
                    "sid": sid("SM"), "account_sid": ACCOUNT_SID, "to": form.get("To"),
                    "from": form.get("From"), "body": form.get("Body"), "status": "queued",
                    "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
                }
                if api.status >= 400:
                    body = {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                            "status": api.status, "more_info": "https://www.twilio.com/docs/errors/21610"}
                raw = json.dumps(body).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TwilioApp:
    """The real app on a loopback port, configured for Twilio."""

    def __init__(self, tmp: Path, api_url: str | None = None) -> None:

        from bot.app import create_app
        from bot.engine import Engine
        from crm_store.db import make_session_factory, upgrade
        from crm_store.requests import SqlRequestStore
        from crm_store.state_store import SqlStateStore

        # The public URL must be known before the app is built (signatures cover it).
        self.server = ServerThread()
        self.url = self.server.url
        db_url = f"sqlite:///{tmp / 'pcrm.db'}"
        self.settings = Settings(
            database_url=db_url, redis_url=None, pcrm_public_url=self.url, pcrm_model_dir=ROOT / "var" / "model",
            twilio_account_sid=ACCOUNT_SID, twilio_auth_token=TOKEN, twilio_from_number=FROM_NUMBER,
            twilio_api_base_url=api_url)
        upgrade(db_url)
        self.sessions = make_session_factory(db_url)
        self.now = OPEN
        engine = Engine(settings=self.settings, states=SqlStateStore(self.sessions),
                        requests=SqlRequestStore(self.sessions), clock=lambda: self.now)
        self.app = create_app(self.settings, engine=engine)
        self.engine = engine
        self.server.start(self.app)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's event loop (as code inside the app would)."""
        return self.server.call(coro, timeout)

    def signature(self, path: str, params: dict[str, str], token: str = TOKEN) -> str:
        return RequestValidator(token).compute_signature(self.url + path, params)

    def post(self, path: str, params: dict[str, str], *, sign: bool = True, token: str = TOKEN,
             signature: str | None = None) -> httpx.Response:
        """POST a form as Twilio does, signed with ``token`` (or the given/no signature)."""
        headers = {}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        elif sign:
            headers["X-Twilio-Signature"] = self.signature(path, params, token)
        return self.http.post(path, data=params, headers=headers)

    def channel(self, name: str) -> Any:
        return self.app.state.channels[name]

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.sessions.kw["bind"].dispose()
