"""Answer an information question at once from the knowledge base."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions import backend


class ActionAnswerFaq(Action):
    """Answer the ``faq.<topic>`` intent just recognised with its knowledge-base article
    (``faq: faq.<topic>`` in nlu_data/knowledge), its source on a last line; ``utter_faq_<topic>``
    when the knowledge base has no article for the topic."""

    def name(self) -> str:
        return "action_answer_faq"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        intent = (tracker.latest_message.get("intent") or {}).get("name") or ""
        lang = tracker.get_slot("lang") or "ko"
        kb = backend.get().kb
        article = kb.for_faq(intent) if kb is not None and intent.startswith("faq.") else None
        if article is None:
            topic = intent.removeprefix("faq.")
            dispatcher.utter_message(response=f"utter_faq_{topic}")
            return []
        from bot.kb.retrieval import cited_answer

        text, _hints = cited_answer(kb, article, lang)
        dispatcher.utter_message(text=text)
        return []
