"""Answer an information question at once from the knowledge base."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher


class ActionAnswerFaq(Action):
    """Utter ``utter_faq_<topic>`` for the ``faq.<topic>`` intent just recognised."""

    def name(self) -> str:
        return "action_answer_faq"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        intent = (tracker.latest_message.get("intent") or {}).get("name") or ""
        topic = intent.removeprefix("faq.")
        dispatcher.utter_message(response=f"utter_faq_{topic}")
        return []
