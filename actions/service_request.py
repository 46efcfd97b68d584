"""Open a service request (민원) from the slots the form collected."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend
from bot.service_requests import RequestDraft


class ActionOpenServiceRequest(Action):
    """Store the request, give the resident the ticket number, department and expected time."""

    def name(self) -> str:
        return "action_open_service_request"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        slots = tracker.current_slot_values()
        lang = slots.get("lang") or "ko"
        service = be.knowledge.services[slots["service_code"]]
        channel, _, sender = tracker.sender_id.partition(":")
        draft = RequestDraft(
            service_code=service.code, department=service.department,
            description=slots.get("description") or "", address_string=slots.get("location"),
            lat=slots.get("lat"), long=slots.get("long"), when=slots.get("when"),
            media_url=slots.get("media_url"), consent=bool(slots.get("consent")),
            publish_consent=bool(slots.get("publish_consent")),
            channel=channel or "rest", sender_id=sender, lang=lang,
            expected_hours=service.expected_hours)
        rec = be.requests.open(draft)
        expected = rec.expected_at.astimezone(be_tz(be)).strftime("%Y-%m-%d %H:%M") if rec.expected_at else "-"
        dispatcher.utter_message(
            response="utter_request_opened", ticket=rec.ticket, service=service.name(lang),
            department=be.knowledge.department_name(service.department, lang), expected=expected)
        return [SlotSet("ticket", rec.ticket), SlotSet("request_department", service.department)]


def be_tz(be: backend.Backend):  # noqa: ANN201 - tiny helper
    """The municipality's time zone, for times residents read."""
    return be.knowledge.municipality.municipality.tz
