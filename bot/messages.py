"""Channel-neutral message types.

Every channel adapter turns its webhook or socket frame into one :class:`Message`;
the engine answers with one :class:`Turn`; the adapter renders ``Turn.replies`` in
its own form.  These types are the only thing channels and the engine share, which
is what keeps "no channel knows another, and the engine knows no channel" true.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Lang = Literal["ko", "en"]


def new_id() -> str:
    """32 random hex digits: a delivery id or lock token (unique, not secret).

    ``uuid4()`` reads the kernel's random source on every call, a system call per
    message on the server's busiest thread; the random module (re-seeded in every
    process it forks) is enough for ids that only need to be unique.
    """
    return f"{random.getrandbits(128):032x}"


#: ``sender_id`` prefix of a sender the channel cannot identify (a caller who withheld the number:
#: ``anonymous:<CallSid>``): such a message is handled like any other (lock, de-duplication, limits,
#: engine) but nothing about it is stored, since there is nobody to file it under.
ANONYMOUS_PREFIX = "anonymous:"

AttachmentKind = Literal["location", "photo", "contact", "recording", "file"]


@dataclass(slots=True)
class Attachment:
    """Something a resident sent besides text (a Telegram location, a photo, a shared contact)."""

    kind: AttachmentKind
    url: str | None = None
    lat: float | None = None
    long: float | None = None
    phone: str | None = None
    file_id: str | None = None
    address: str | None = None


@dataclass(slots=True)
class Message:
    """One inbound message, whatever channel it came from.

    ``sender_id`` is the channel's own identity of the resident (a phone number for
    SMS and voice, a chat id for Telegram, a browser session id for web chat).
    ``message_id`` is the channel's delivery id (MessageSid, update_id): retried
    deliveries carry the same one and are recorded once.
    """

    channel: str
    sender_id: str
    text: str = ""
    lang: Lang | None = None
    attachments: list[Attachment] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    message_id: str = field(default_factory=new_id)
    received_at: float = field(default_factory=time.time)

    @property
    def conversation_key(self) -> str:
        """Key of the dialogue state: one conversation per channel identity."""
        return f"{self.channel}:{self.sender_id}"

    @property
    def anonymous(self) -> bool:
        """Whether the sender is unidentified (see :data:`ANONYMOUS_PREFIX`)."""
        return self.sender_id.startswith(ANONYMOUS_PREFIX)

    def attachment(self, kind: AttachmentKind) -> Attachment | None:
        """First attachment of ``kind``, if any."""
        return next((a for a in self.attachments if a.kind == kind), None)


@dataclass(slots=True)
class Button:
    """A quick reply. ``payload`` is what comes back as the resident's next text."""

    title: str
    payload: str


@dataclass(slots=True)
class Reply:
    """One outbound message.

    ``hints`` lets a channel render well without the engine knowing the channel:
    ``expect_speech`` (voice should listen next), ``end_call``, ``request_location``,
    ``emergency`` (render prominently), ``link`` (URL with more detail).
    """

    text: str
    buttons: list[Button] = field(default_factory=list)
    hints: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The reply as JSON holds it (the dedup store keeps every answer this way): the fields
        named here, not ``dataclasses.asdict``, which deep-copies recursively a value that is
        serialised at once (it looked like 5 % of a message under cProfile; within the noise
        measured plainly). ``tests/test_reply_json.py`` fails if a new field is left out."""
        return {"text": self.text, "buttons": [{"title": b.title, "payload": b.payload} for b in self.buttons],
                "hints": dict(self.hints)}


@dataclass(slots=True)
class Event:
    """Something that happened in a turn, for the store and the console.

    Types: ``intent``, ``entities``, ``slot``, ``form_started``, ``form_cancelled``,
    ``request_opened``, ``status_lookup``, ``handoff``, ``reset``, ``error``,
    ``paused`` (the message went to an agent instead of the bot).
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Routing:
    """What the engine decided for this turn.

    ``action``: ``answer`` (bot answered), ``collect`` (form in progress),
    ``request`` (service request opened), ``status``, ``handoff``, ``clarify``,
    ``smalltalk``, ``paused`` (handed off; bot silent).
    """

    action: str
    department: str | None = None
    priority: int = 0
    service_code: str | None = None
    ticket: str | None = None


@dataclass(slots=True)
class Turn:
    """The engine's whole answer to one :class:`Message`."""

    conversation_key: str
    lang: Lang
    label: str
    confidence: float
    replies: list[Reply] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    routing: Routing = field(default_factory=lambda: Routing("answer"))
    entities: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float = 0.0

    def event(self, type_: str) -> Event | None:
        """First event of ``type_``, if any."""
        return next((e for e in self.events if e.type == type_), None)

    @property
    def text(self) -> str:
        """All reply texts joined, handy for tests and logs."""
        return "\n".join(r.text for r in self.replies)
