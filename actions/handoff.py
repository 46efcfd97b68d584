"""Hand the conversation to a person of the right department."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend


class ActionHandoff(Action):
    """Tell the resident who takes over; the engine turns the slots into a hand-off event.

    Within business hours the conversation pauses until an agent closes it;
    outside them the bot takes a message and promises a call-back.
    """

    def name(self) -> str:
        return "action_handoff"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        lang = tracker.get_slot("lang") or "ko"
        dept = tracker.get_slot("handoff_department") or "general"
        name = be.knowledge.department_name(dept, lang)
        if tracker.get_slot("office_open") is False:
            hours = be.knowledge.municipality.business_hours
            dispatcher.utter_message(response="utter_handoff_after_hours", department=name,
                                     open_hours=f"{hours.open}–{hours.close}")
            return [SlotSet("handed_off", False)]
        dispatcher.utter_message(response="utter_handoff", department=name)
        return [SlotSet("handed_off", True)]
