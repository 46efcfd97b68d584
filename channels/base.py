"""The adapter interface every channel implements.

An adapter owns its webhook routes: it turns a request into a
:class:`bot.messages.Message` (or a channel event, :mod:`bot.ports`), hands it to its
port (the inbox: lock, store, engine, store again), and renders the resulting
:class:`bot.messages.Turn` in its own form. It may also send replies later (an agent's
answer, a status change) through :meth:`ChannelAdapter.send`.

What an adapter may import is checked by ``lint-imports`` (``pyproject.toml``): the
channel-neutral types and the port, never the store (``crm_store``), the engine
(``bot.engine``, ``bot.dialogue``, ``bot.nlu``, ``bot.kb``) or another channel.
Everything else it needs — what to say, whether people are at work, whom it may text —
it asks the port.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from fastapi import APIRouter

from bot.messages import Reply
from bot.ports import ChannelPort

if TYPE_CHECKING:
    from bot.settings import Settings


class ChannelAdapter(ABC):
    """One channel: its routes in, its way of sending out."""

    #: Channel name as stored on identities and interactions ("rest", "webchat", "twilio_sms", ...).
    name: str = ""

    def __init__(self, inbox: ChannelPort, settings: Settings) -> None:
        self.inbox = inbox
        self.settings = settings

    @abstractmethod
    def router(self) -> APIRouter:
        """FastAPI routes of this channel's webhooks or sockets."""

    async def send(self, recipient_id: str, replies: list[Reply]) -> bool:
        """Deliver replies outside a webhook answer. False when this channel cannot push."""
        return False
