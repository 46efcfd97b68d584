"""Two residents, one pothole, one ticket: the duplicate offer inside a report's form.

As soon as a form knows *where* (the ``location`` slot, typed or shared), the bot asks the store
(through ``action_find_duplicate``) whether an open request of the same service is already filed
there. If so, before asking anything else it offers that ticket:
"이미 접수된 신고가 있어요 (2026-000123). 처리 소식을 함께 받으시겠어요?"

* 예 — the resident follows that ticket (``action_subscribe_request``: told of its updates on
  their own channel, counted on it), the event ``request_subscribed`` is recorded, and the form
  ends with a reply that quotes the number;
* 아니요 — the report goes on as a new one (an agent can still merge it later);
* anything else — the offer is asked once more (a question is answered by the form's usual repair
  first); a second non-answer is taken as 아니요, so nobody is stuck.

The whole feature is one call in :func:`bot.dialogue.policy.ask_next` (:func:`before_ask`): the
offer is pending while ``requested_slot`` is :data:`OFFER_SLOT`, which no form slot handler
claims, so the form's reply path (cancel, pause, correction, aside, fill) runs as for any other
question and lands back in ``ask_next``, where the answer is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.dialogue import followup
from bot.dialogue import understanding as u

if TYPE_CHECKING:
    from bot.dialogue.context import TurnContext

#: ``requested_slot`` while the offer waits for its 예/아니요.
OFFER_SLOT = "_duplicate"
#: The location value last looked up (a corrected place is looked up again).
_CHECKED = "_dup_checked"
_TRIES = "_dup_tries"


def before_ask(ctx: TurnContext) -> bool:
    """Offer, or settle, a duplicate before the form asks its next question. True: the turn is answered."""
    state = ctx.state
    slots = state.slots
    if state.requested_slot in (followup.FIXED_SLOT, followup.WHY_SLOT):
        # Closing the loop rides on the same hook: "is it fixed?" is a one-question form.
        return followup.answer(ctx)
    location = slots.get("location")
    if state.requested_slot == OFFER_SLOT:
        if slots.get(_CHECKED) == location and slots.get("duplicate_ticket"):
            return _answer(ctx)
        state.requested_slot = None  # the place was corrected meanwhile: look again below
    if not location or slots.get(_CHECKED) == location or not state.active_form:
        return False
    slots[_CHECKED] = location
    slots.pop(_TRIES, None)
    shared = ctx.message_location()
    if shared and shared.get("location") == location:
        # A shared point is read back as the address it was taken for, so a wrong pin is caught now.
        ctx.say("utter_location_read", location=location)
    ctx.run_action("action_find_duplicate")
    if not slots.get("duplicate_ticket"):
        return False
    _offer(ctx, "utter_duplicate_offer")
    return True


def _offer(ctx: TurnContext, key: str) -> None:
    state = ctx.state
    state.requested_slot = OFFER_SLOT
    state.awaiting_confirm = False
    service = ctx.knowledge.services[state.active_form or ""]
    ctx.route("collect", department=service.department, service_code=service.code)
    values = dict(state.slots.get("duplicate_values") or {})
    values.setdefault("ticket", state.slots.get("duplicate_ticket"))
    ctx.say(key, buttons=ctx.yes_no(), **values)


def _answer(ctx: TurnContext) -> bool:
    state = ctx.state
    slots = state.slots
    verdict = u.yes_no(ctx.text).verdict
    if verdict is None and int(slots.get(_TRIES, 0)) < 1:
        slots[_TRIES] = 1
        _offer(ctx, "utter_duplicate_offer_again")
        return True
    if verdict is True and _subscribe(ctx):
        return True
    # 아니요 (or a second non-answer): a new report; the form asks its next question.
    state.requested_slot = None
    slots.pop("duplicate_ticket", None)
    slots.pop("duplicate_values", None)
    slots.pop(_TRIES, None)
    ctx.event("duplicate_declined", service_code=state.active_form)
    ctx.say("utter_duplicate_declined")
    return False


def _subscribe(ctx: TurnContext) -> bool:
    """Follow the ticket and end the form; False if the ticket is gone (the report goes on as new)."""
    from bot.dialogue.policy import start_queued  # the policy imports this module

    state = ctx.state
    code = state.active_form
    ticket = state.slots.get("duplicate_ticket")
    ctx.answered(code)
    ctx.run_action("action_subscribe_request")
    if not state.slots.get("subscribed"):  # the ticket vanished meanwhile (merged, erased): file anew
        state.requested_slot = None
        state.slots.pop("duplicate_ticket", None)
        return False
    department = state.slots.get("request_department")
    ctx.event("request_subscribed", ticket=ticket, service_code=code, department=department)
    ctx.route("request", department=department, service_code=code, ticket=ticket)
    state.last_department = department
    queue = state.queue
    state.reset()
    state.queue = queue
    start_queued(ctx)
    return True
