"""The channel port: everything a channel adapter may ask of the rest of the system.

An adapter (``channels/*.py``) turns its webhook or socket into channel-neutral values
(:mod:`bot.messages`, the events below) and hands them to a :class:`ChannelPort`; it never
reaches the store, the engine or another channel (``lint-imports`` checks it, see
``pyproject.toml``). The port is implemented by the inbox (:class:`bot.inbox.Inbox`, its
port methods in :mod:`bot.inbox_port`), which is where the conversation's lock, the
de-duplication of retried deliveries and the rate limits live: anything that changes a
conversation goes through it, so nothing changes a dialogue state behind a turn's back.

Channel events are facts a channel learns besides a resident's words (a STOP keyword, a
delivery report, a call's status, a chat that blocked the bot). They are plain dataclasses:
what a provider's codes *mean* (Twilio's error 21610 is an unsubscribe) is decided by its
adapter; what is *stored* for each is decided by one writer, :mod:`crm_store.channel_events`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.messages import Lang, Message, Reply, Turn

Keyword = Literal["stop", "start", "help"]


@dataclass(slots=True, frozen=True)
class ContactKeyword:
    """A resident sent a contact keyword the channel answers itself, without the engine:
    ``stop`` (opt out of everything the centre initiates), ``start`` (opt back in), ``help``.

    ``message`` is the keyword as received (its ``message_id`` makes a retry a no-op) and
    ``reply`` what the channel answered; both are kept on the resident's timeline.
    """

    message: Message
    keyword: Keyword
    reply: str


Delivery = Literal["ok", "opted_out", "unreachable"]


@dataclass(slots=True, frozen=True)
class DeliveryStatus:
    """A provider's report on an outbound message (queued, sent, delivered, failed, ...).

    ``outcome`` is what the adapter read from the provider's error code: ``opted_out`` (the
    recipient unsubscribed at the carrier), ``unreachable`` (the address can never receive),
    else ``ok``. ``reported_by`` names the provider in the audit trail.
    """

    channel: str
    delivery_id: str
    status: str
    reported_by: str
    error: str = ""
    recipient: str = ""
    outcome: Delivery = "ok"


@dataclass(slots=True, frozen=True)
class CallStatus:
    """A phone call's status (ringing, in-progress, completed, busy, no-answer, ...)."""

    channel: str
    sender_id: str
    call_id: str
    status: str
    duration_s: str = ""


@dataclass(slots=True, frozen=True)
class Reachability:
    """Whether the channel can still deliver to ``sender_id`` (a Telegram chat that blocked the
    bot is unreachable until the resident writes again)."""

    channel: str
    sender_id: str
    reachable: bool


ChannelEvent = ContactKeyword | DeliveryStatus | CallStatus | Reachability


class ChannelPort(Protocol):
    """What an adapter hands messages and events to, and asks for what it must say."""

    async def receive(self, message: Message) -> Turn:
        """Store the message, run the engine, store the turn, under the conversation's lock;
        a retried delivery gets the first answer. Raises ``RateLimited`` over a limit."""
        ...

    async def note(self, event: ChannelEvent) -> None:
        """Record a channel event (raises when it could not be stored: an opt-out that was not
        saved must never be confirmed)."""
        ...

    async def reset(self, conversation_key: str, lang: Lang = "ko") -> None:
        """Start the conversation afresh (a new phone call): no form, question or hand-off left
        over; under the conversation's lock, through the dialogue-state store."""
        ...

    async def release(self, conversation_key: str, ask_rating: bool = True) -> list[Reply]:
        """Give a handed-off conversation back to the bot (under the lock); the replies to send."""
        ...

    def may_contact(self, channel: str, recipient_id: str) -> bool:
        """Whether the centre may start a message to ``recipient_id`` (not opted out, not known
        unreachable). Blocking: call it from a worker thread."""
        ...

    def say(self, key: str, lang: str, **values: Any) -> str:
        """A response text of ``nlu_data/responses.yml`` in ``lang``."""
        ...

    def conversation_lang(self, conversation_key: str) -> str | None:
        """The language the conversation has been in, None before its first turn (blocking)."""
        ...

    def history(self, conversation_key: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` messages of the conversation, oldest first (blocking)."""
        ...

    def open_now(self) -> bool:
        """Whether people are at work now (business hours and holidays of ``config.yml``)."""
        ...

    def phone_of(self, department: str | None) -> str | None:
        """The number to put a caller through to: the department's, the general line's, the office's."""
        ...

    def office_name(self, lang: str) -> str:
        """The municipality's name, as callers are greeted."""
        ...

    def vocabulary(self, lang: str) -> list[str]:
        """The names of services and FAQ topics (speech-recognition hints)."""
        ...

    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish on the live-event bus (pushes to an open web-chat socket)."""
        ...

    def subscribe(self, *topics: str) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, dict[str, Any]]]]:
        """Subscribe to live-event topics (``async with port.subscribe(t) as stream``)."""
        ...
