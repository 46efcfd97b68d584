"""The inbox's side of the channel port (:class:`bot.ports.ChannelPort`) besides ``receive``.

Kept apart from :mod:`bot.inbox` (the per-message hot path) because none of it is on that path:
these are the rarer things adapters need — record a channel event, restart or release a
conversation, ask what to say — each taken to the one place that owns it:

* events to the one writer, :mod:`crm_store.channel_events`, in a transaction of their own;
* dialogue-state changes (:meth:`reset`, :meth:`release`, :meth:`take_over`) to the engine's
  state store (so the Redis cache in front of SQL stays true) *under the conversation's lock*
  (the same FIFO lock :meth:`Inbox.receive` takes, so a reset never interleaves with a turn);
* texts, office hours and numbers to the engine's knowledge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from anyio import to_thread

from bot.messages import Lang, Reply
from bot.ports import ChannelEvent
from crm_store import channel_events

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from bot.admission import Gate
    from bot.dialogue.state import DialogueState
    from bot.engine import Engine
    from bot.live import LiveEvents

R = TypeVar("R")


class InboxPort:
    """The channel-port methods of :class:`bot.inbox.Inbox` other than ``receive``, and the web
    app's hooks on a conversation's state (:meth:`take_over`, :meth:`amend`). A mixin: it uses the
    inbox's ``engine``, ``sessions``, ``gate`` and ``live``."""

    engine: Engine
    sessions: sessionmaker[Session]
    gate: Gate
    live: LiveEvents

    # --- channel events ----------------------------------------------------------------------
    async def note(self, event: ChannelEvent) -> None:
        """Record ``event`` (:mod:`crm_store.channel_events`); raises when the store is down."""
        await to_thread.run_sync(self.note_sync, event)

    def note_sync(self, event: ChannelEvent) -> None:
        with self.sessions.begin() as s:
            channel_events.record(s, event)

    def may_contact(self, channel: str, recipient_id: str) -> bool:
        with self.sessions() as s:
            return channel_events.may_contact(s, channel, recipient_id)

    def history(self, conversation_key: str, limit: int) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return channel_events.history(s, conversation_key, limit)

    # --- dialogue state, under the conversation's lock ----------------------------------------
    async def reset(self, conversation_key: str, lang: Lang = "ko") -> None:
        await to_thread.run_sync(self.reset_sync, conversation_key, lang)

    def reset_sync(self, conversation_key: str, lang: Lang = "ko") -> None:
        with self.gate.hold(conversation_key):
            self.engine.restart(conversation_key, lang)

    async def release(self, conversation_key: str, ask_rating: bool = True) -> list[Reply]:
        return await to_thread.run_sync(self.release_sync, conversation_key, ask_rating)

    def release_sync(self, conversation_key: str, ask_rating: bool = True) -> list[Reply]:
        """An agent closed the hand-off: the bot resumes (asking for a rating first)."""
        with self.gate.hold(conversation_key):
            return self.engine.release(conversation_key, ask_rating)

    async def take_over(self, conversation_key: str, department: str) -> None:
        """An agent took the conversation: the resident's next messages go to people."""
        await to_thread.run_sync(self.take_over_sync, conversation_key, department)

    def take_over_sync(self, conversation_key: str, department: str) -> None:
        with self.gate.hold(conversation_key):
            self.engine.take_over(conversation_key, department)

    async def amend(self, conversation_key: str, change: Callable[[DialogueState], R]) -> R:
        """Run ``change`` on the conversation's dialogue state under its lock and save the state if
        ``change`` altered it (e.g. a field crew's "fixed" asks the resident a follow-up question);
        ``change``'s result is returned."""
        return await to_thread.run_sync(self.amend_sync, conversation_key, change)

    def amend_sync(self, conversation_key: str, change: Callable[[DialogueState], R]) -> R:
        with self.gate.hold(conversation_key):
            state = self.engine.states.load(conversation_key)
            before = state.to_json()
            result = change(state)
            if state.to_json() != before:
                self.engine.states.save(state)
            return result

    def conversation_lang(self, conversation_key: str) -> str | None:
        state = self.engine.states.load(conversation_key)
        return state.lang if state.turns else None

    # --- what to say ---------------------------------------------------------------------------
    def say(self, key: str, lang: str, **values: Any) -> str:
        return self.engine.knowledge.render(key, lang, **values)

    def open_now(self) -> bool:
        return bool(self.engine.hours.is_open(self.engine.clock()))

    def phone_of(self, department: str | None) -> str | None:
        k = self.engine.knowledge
        for code in (department, "general"):
            phone = (k.departments.get(code or "") or {}).get("phone")
            if phone:
                return str(phone)
        return k.municipality.municipality.phone or None

    def office_name(self, lang: str) -> str:
        return self.engine.knowledge.municipality.municipality.name.get(lang)

    def vocabulary(self, lang: str) -> list[str]:
        k = self.engine.knowledge
        return [s.name(lang) for s in k.services.values()] + [str(f.get(lang, "")) for f in k.faq.values()]

    # --- live events ---------------------------------------------------------------------------
    async def publish(self, topic: str, payload: dict[str, Any]) -> None:
        await self.live.publish(topic, payload)

    def subscribe(self, *topics: str) -> AbstractAsyncContextManager[AsyncIterator[tuple[str, dict[str, Any]]]]:
        return self.live.subscribe(*topics)
