"""The ``lang`` slot under real Rasa: the conversation language, decided as our engine decides it.

Every response of the project ``pcrm export rasa`` writes is conditioned on the
categorical slot ``lang`` (ko/en, initially ko), whose mapping is ``type: custom``.
Rasa 3.x fills such slots by running ``action_validate_slot_mappings`` (when the
domain lists it) after every user message; this is that action. Its
``extract_lang`` applies :func:`bot.nlu.language.conversation_lang`, the rule of
``Engine._conversation_lang``: any Hangul means Korean, a Korean conversation turns
English only on a message of at least two English words, a button payload or "ok"
keeps the language, a first message follows the channel's hint (here an optional
``lang`` in the message's metadata, e.g. ``{"metadata": {"lang": "en"}}`` on Rasa's
REST channel).

Our engine never runs this action: it decides the language itself before any action
runs (it is registered in-process like every action of the package, and only called
by name).
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import ValidationAction

from bot.nlu.language import conversation_lang, detect
from bot.nlu.normalize import normalize

LANGS = ("ko", "en")


def _latest_user_event(tracker: Tracker) -> dict[str, Any] | None:
    return next((e for e in reversed(tracker.events) if e.get("event") == "user"), None)


class ValidateSlotMappings(ValidationAction):
    """``action_validate_slot_mappings``: fills ``lang`` for the latest user message."""

    def name(self) -> str:
        return "action_validate_slot_mappings"

    async def required_slots(self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: dict[str, Any]) -> list[str]:
        # Only ``lang`` is ours to fill; the other custom slots are set by our actions, and
        # from_entity slots (``ticket``) need no validation (no per-message warning for them).
        return [slot for slot in domain_slots if slot == "lang"]

    def extract_lang(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                     domain: dict[str, Any]) -> dict[str, Any]:
        """``{"lang": "ko" | "en"}`` for the latest user message."""
        previous = tracker.get_slot("lang")
        previous = previous if previous in LANGS else "ko"
        latest = _latest_user_event(tracker)
        metadata = (latest or {}).get("metadata") or {}
        hint = metadata.get("lang") if isinstance(metadata, dict) and metadata.get("lang") in LANGS else None
        text = normalize(str((tracker.latest_message or {}).get("text") or ""))
        first_message = sum(1 for e in tracker.events if e.get("event") == "user") <= 1
        return {"lang": conversation_lang(text, detect(text, default=hint or previous), previous, hint,
                                          first_message)}

    def validate_lang(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                      domain: dict[str, Any]) -> dict[str, Any]:
        """Accepts what :meth:`extract_lang` set (without it rasa_sdk warns on every message)."""
        return {"lang": value if value in LANGS else "ko"}
