"""Look up the status of an earlier service request by its ticket number."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend
from actions.service_request import be_tz


class ActionCheckStatus(Action):
    """Tell the resident where their request stands (or that the number is unknown)."""

    def name(self) -> str:
        return "action_check_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        lang = tracker.get_slot("lang") or "ko"
        ticket = tracker.get_slot("ticket") or ""
        rec = be.requests.get(ticket)
        if rec is None:
            dispatcher.utter_message(response="utter_status_not_found", ticket=ticket)
            return [SlotSet("status_found", False)]
        tz = be_tz(be)
        service = be.knowledge.services.get(rec.service_code)
        dispatcher.utter_message(
            response="utter_status", ticket=rec.ticket,
            service=service.name(lang) if service else rec.service_code,
            status=be.knowledge.render(f"status_{rec.sub_status}", lang),
            department=be.knowledge.department_name(rec.department, lang),
            updated=rec.updated_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            expected=rec.expected_at.astimezone(tz).strftime("%Y-%m-%d") if rec.expected_at else "-")
        return [SlotSet("status_found", True), SlotSet("request_department", rec.department)]
