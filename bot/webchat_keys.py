"""Web-chat sessions the browser can prove it holds.

The widget makes a random *key* and keeps it (``localStorage``); the session id every other
part of the system sees (``webchat:<session>``, the console, logs) is a one-way digest of that
key. Knowing a session id — from a log line, a console screen or a shared link — therefore
gives no access to the conversation: the socket, the history and the phone-link API all ask for
the key and derive the session from it. No server state and no server secret are needed, so
every worker agrees and a restart changes nothing.

The key travels in the ``Sec-WebSocket-Protocol`` header of the socket (``pcrm-key.<key>``;
browsers cannot set other headers on a WebSocket) and in ``X-Webchat-Key`` on HTTP, never in a
query string (access logs record those).
"""

from __future__ import annotations

import base64
import hashlib
import re

#: A key: 22-86 characters of base64url (the widget makes 32 random bytes → 43 characters).
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{22,86}$")
SUBPROTOCOL = "pcrm-webchat"
KEY_PROTOCOL_PREFIX = "pcrm-key."
KEY_HEADER = "x-webchat-key"


def session_of(key: str) -> str:
    """The session id of ``key``: ``w`` + 32 characters of base64url(SHA-256). ``ValueError`` if
    ``key`` is not a key."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ValueError("not a web-chat key")
    digest = hashlib.sha256(b"pcrm-webchat|" + key.encode()).digest()
    return "w" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:32]


def key_from_protocols(header: str | None) -> str | None:
    """The key offered in a ``Sec-WebSocket-Protocol`` header, if any."""
    for item in (header or "").split(","):
        item = item.strip()
        if item.startswith(KEY_PROTOCOL_PREFIX):
            return item[len(KEY_PROTOCOL_PREFIX):]
    return None


def protocols_for(key: str) -> list[str]:
    """What a client offers: our protocol name (the server answers with it) and the key."""
    return [SUBPROTOCOL, KEY_PROTOCOL_PREFIX + key]


def new_key() -> str:
    """A fresh key (tests and non-browser clients; the widget makes its own)."""
    import secrets

    return secrets.token_urlsafe(32)
