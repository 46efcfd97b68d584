"""Conversation state and the interface of its stores.

The engine reads a :class:`DialogueState` at the start of a turn and writes it
back at the end.  Where it lives (a dict, the SQL store, Redis) is the business of
a :class:`StateStore` implementation; the in-process one is here, the SQL one in
``crm_store`` and the Redis one in ``bot.dialogue.redis_state``.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DialogueState:
    """Everything the policy needs to remember between two messages."""

    key: str
    lang: str = "ko"
    slots: dict[str, Any] = field(default_factory=dict)
    active_form: str | None = None          # service code being collected
    requested_slot: str | None = None       # what the last question asked for
    awaiting_confirm: bool = False
    recent_intents: list[str] = field(default_factory=list)
    clarify_count: int = 0
    clarify_options: list[str] = field(default_factory=list)
    awaiting: str | None = None             # "ticket", "rating", "delete_confirm", "reminder_consent", …
    handed_off: bool = False
    handoff_department: str | None = None
    last_department: str | None = None
    last_article: str | None = None         # KB article answered last: context of a follow-up question
    reminders: bool | None = None           # due-date reminders: asked and agreed / declined or stopped
    queue: list[dict[str, Any]] = field(default_factory=list)  # reports said mid-form, taken up next
    callback: dict[str, Any] = field(default_factory=dict)     # after hours: department, reason, message, phone
    emergency: str | None = None            # the emergency's kind, until the resident says otherwise
    last_ticket: str | None = None          # the ticket opened last ("그거 언제 고쳐져요?" is about it)
    turns: int = 0
    version: int = 0                        # bumped on every save; lets stores detect races

    def remember_intent(self, label: str) -> None:
        """Keep the last few intents (for routing a later hand-off and its summary)."""
        self.recent_intents = (self.recent_intents + [label])[-8:]

    def reset(self) -> None:
        """Forget the form and clarification, keep language and hand-off state."""
        self.slots.clear()
        self.active_form = None
        self.requested_slot = None
        self.awaiting_confirm = False
        self.clarify_count = 0
        self.clarify_options = []
        self.awaiting = None

    def to_json(self) -> str:
        # Shallow (fields are plain JSON values): ``asdict`` deep-copies every list and dict first.
        return json.dumps({name: getattr(self, name) for name in self.__dataclass_fields__}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DialogueState:
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StateStore(ABC):
    """Where dialogue states live between turns."""

    @abstractmethod
    def load(self, key: str) -> DialogueState:
        """The state of conversation ``key`` (a fresh one if unknown)."""

    @abstractmethod
    def save(self, state: DialogueState) -> None:
        """Persist ``state`` (bumping its version)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Forget conversation ``key`` (the resident asked to delete their data)."""


class InMemoryStateStore(StateStore):
    """Dict-backed store for one process (tests, `pcrm chat`)."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> DialogueState:
        with self._lock:
            raw = self._data.get(key)
        return DialogueState.from_json(raw) if raw else DialogueState(key=key)

    def save(self, state: DialogueState) -> None:
        state.version += 1
        with self._lock:
            self._data[state.key] = state.to_json()

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)
