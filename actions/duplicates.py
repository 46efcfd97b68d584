"""Is this report already filed? Look up an open request of the same service at the same place,
and follow it instead of filing a second ticket (국민신문고's clustering, FixMyStreet's suggestions).

``action_find_duplicate`` also keeps coordinates for the map: a typed district address is
geocoded (bot/geo.py, no internet) into the ``lat``/``long`` slots.
"""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import backend
from actions.service_request import be_tz
from bot.geo import gazetteer
from bot.service_requests import DuplicateRule


def rule_for(be: backend.Backend, service_code: str) -> DuplicateRule:
    """The service's window from ``config.yml`` (the typed config computes the windows once)."""
    windows = be.knowledge.municipality.duplicate_windows
    w = windows.get(service_code) or windows["*"]
    return DuplicateRule(w.meters, w.days)


log = logging.getLogger("pcrm.actions.duplicates")

class ActionFindDuplicate(Action):
    """Sets ``duplicate_ticket`` (and the values the offer quotes) or clears it."""

    def name(self) -> str:
        return "action_find_duplicate"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        lang = tracker.get_slot("lang") or "ko"
        code = tracker.get_slot("service_code") or ""
        location = tracker.get_slot("location")
        lat, long = tracker.get_slot("lat"), tracker.get_slot("long")
        events: list[dict[str, Any]] = []
        if (lat is None or long is None) and location:
            found = gazetteer().forward(str(location))
            if found is not None:
                lat, long = found.lat, found.long
                events += [SlotSet("lat", lat), SlotSet("long", long)]
        try:
            rec = be.requests.find_duplicate(code, location, lat, long, rule=rule_for(be, code))
        except Exception:  # noqa: BLE001 - a store outage must not stop the report: no duplicate offered
            log.warning("duplicate lookup failed for %s; the report goes on without one", code, exc_info=True)
            rec = None
        if rec is None:
            return [*events, SlotSet("duplicate_ticket", None)]
        service = be.knowledge.services.get(rec.service_code)
        return [*events, SlotSet("duplicate_ticket", rec.ticket), SlotSet("duplicate_values", {
            "ticket": rec.ticket, "service": service.name(lang) if service else rec.service_code,
            "requested": rec.requested_at.astimezone(be_tz(be)).strftime("%Y-%m-%d"),
            "status": be.knowledge.render(f"status_{rec.sub_status}", lang)})]


class ActionSubscribeRequest(Action):
    """The resident takes the existing ticket: they follow its updates and are counted on it."""

    def name(self) -> str:
        return "action_subscribe_request"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        ticket = tracker.get_slot("duplicate_ticket") or ""
        count = be.requests.subscribe(ticket, tracker.sender_id)
        if count is None:
            return [SlotSet("subscribed", False)]
        rec = be.requests.get(ticket)
        dispatcher.utter_message(response="utter_duplicate_subscribed", ticket=ticket, count=count + 1)
        return [SlotSet("subscribed", True), SlotSet("ticket", ticket),
                *([SlotSet("request_department", rec.department)] if rec else [])]


class ActionConfirmFixed(Action):
    """The resident says the request marked done is fixed: the loop is closed (kept in its history)."""

    def name(self) -> str:
        return "action_confirm_fixed"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        backend.get().requests.confirm_fixed(tracker.get_slot("fixed_ticket") or "", tracker.sender_id)
        return []


class ActionReopenRequest(Action):
    """The resident says it is not fixed: the request is open again with their words."""

    def name(self) -> str:
        return "action_reopen_request"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        be = backend.get()
        lang = tracker.get_slot("lang") or "ko"
        ticket = tracker.get_slot("fixed_ticket") or ""
        rec = be.requests.reopen(ticket, tracker.get_slot("fixed_words") or "", tracker.sender_id)
        if rec is None:
            dispatcher.utter_message(response="utter_status_not_found", ticket=ticket)
            return []
        dispatcher.utter_message(response="utter_request_reopened", ticket=ticket,
                                 department=be.knowledge.department_name(rec.department, lang))
        return [SlotSet("request_department", rec.department)]
