"""The adapter interface every channel implements.

An adapter owns its webhook routes: it turns a request into a
:class:`bot.messages.Message`, hands it to the :class:`Inbox` (store, engine,
store again), and renders the resulting :class:`bot.messages.Turn` in its own
form. It may also send replies later (an agent's answer, a status change)
through :meth:`ChannelAdapter.send`. No adapter imports another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter

from bot.messages import Message, Reply, Turn

if TYPE_CHECKING:
    from bot.settings import Settings


class Inbox(Protocol):
    """What adapters hand messages to (implemented by :class:`bot.inbox.Inbox`)."""

    async def receive(self, message: Message) -> Turn:
        """Store the message, run the engine, store the turn; duplicates return the first answer."""
        ...


class ChannelAdapter(ABC):
    """One channel: its routes in, its way of sending out."""

    #: Channel name as stored on identities and interactions ("rest", "webchat", "twilio_sms", ...).
    name: str = ""

    def __init__(self, inbox: Inbox, settings: Settings) -> None:
        self.inbox = inbox
        self.settings = settings

    @abstractmethod
    def router(self) -> APIRouter:
        """FastAPI routes of this channel's webhooks or sockets."""

    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """Deliver replies outside a webhook answer. False when this channel cannot push."""
        return False
