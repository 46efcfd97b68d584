"""Where a resident's earlier service requests stand: by ticket number, or their own latest ones."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend
from actions.service_request import be_tz


def _status_values(be: backend.Backend, rec: Any, lang: str) -> dict[str, str]:
    """The ``utter_status`` placeholders of one request, in ``lang`` and the municipality's time."""
    tz = be_tz(be)
    service = be.knowledge.services.get(rec.service_code)
    return {"ticket": rec.ticket, "service": service.name(lang) if service else rec.service_code,
            "status": be.knowledge.render(f"status_{rec.sub_status}", lang),
            "department": be.knowledge.department_name(rec.department, lang),
            "updated": rec.updated_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            "expected": rec.expected_at.astimezone(tz).strftime("%Y-%m-%d") if rec.expected_at else "-"}


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
        dispatcher.utter_message(response="utter_status", **_status_values(be, rec, lang))
        return [SlotSet("status_found", True), SlotSet("request_department", rec.department)]


class ActionListMyRequests(Action):
    """"제 민원 어떻게 됐어요?" without a number: the resident's own latest requests (on any of their
    channels), so nobody has to dig out a ticket number — on the phone least of all. One request:
    its whole status; several: one line each. None: nothing said (the policy asks for the number)."""

    def name(self) -> str:
        return "action_list_my_requests"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        lang = tracker.get_slot("lang") or "ko"
        recs = be.requests.recent_for(tracker.sender_id, limit=3)
        if len(recs) == 1:
            dispatcher.utter_message(response="utter_status", **_status_values(be, recs[0], lang))
        elif recs:
            lines = [be.knowledge.render("status_line", lang, **_status_values(be, rec, lang)) for rec in recs]
            dispatcher.utter_message(response="utter_my_requests", requests="\n".join(lines))
        return [SlotSet("my_requests", len(recs)),
                *([SlotSet("request_department", recs[0].department)] if recs else [])]
