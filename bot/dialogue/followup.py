"""Closing the loop: "is it fixed?" after a crew marks a request done (FixMyStreet's questionnaire).

bot/field.py sends the question to the reporter and every subscriber on their own channel and
leaves their conversation waiting for the answer with :func:`prepare`: a one-question form
(the request's service, every slot filled, ``requested_slot`` :data:`FIXED_SLOT`), so the form's
usual repair (a question answered, a pause, a language switch) works around it, and the answer
comes back through ``ask_next`` → :func:`bot.dialogue.duplicates.before_ask` → :func:`answer`.

* 예 — ``action_confirm_fixed`` records the confirmation; thanks;
* 아니요 with words ("아니요, 아직 물이 새요") — ``action_reopen_request`` reopens it with them;
* a bare 아니요 — what is still wrong is asked (:data:`WHY_SLOT`), and the next message reopens it;
* anything else — asked once more, then left (the request stays resolved; nothing is assumed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.dialogue import understanding as u

if TYPE_CHECKING:
    from bot.dialogue.context import TurnContext
    from bot.dialogue.state import DialogueState

FIXED_SLOT = "_fixed"
WHY_SLOT = "_fixed_why"
_TRIES = "_fixed_tries"


def prepare(state: DialogueState, ticket: str, service_code: str, slots_of_service: list[str]) -> None:
    """Leave ``state`` waiting for the answer to "is ``ticket`` fixed?" (see the module doc)."""
    queue = state.queue
    state.reset()
    state.queue = queue
    state.active_form = service_code
    state.slots.update({s: "-" for s in slots_of_service})
    state.slots.update({"service_code": service_code, "fixed_ticket": ticket, "_dup_checked": "-",
                        "location": "-"})
    state.requested_slot = FIXED_SLOT


def answer(ctx: TurnContext) -> bool:
    """Read the answer (always True: the turn is answered here)."""
    state = ctx.state
    ticket = state.slots.get("fixed_ticket")
    ctx.answered("conv.request_status")
    if state.requested_slot == WHY_SLOT:
        words = ctx.parse.text.strip()
        if len(u.squash(words)) < 2:
            ctx.say("utter_fixed_ask_why", ticket=ticket)
            return True
        _reopen(ctx, words)
        return True
    reading = u.yes_no(ctx.text)
    if reading.verdict is True:
        ctx.run_action("action_confirm_fixed")
        ctx.event("request_confirmed_fixed", ticket=ticket)
        ctx.say("utter_fixed_thanks", ticket=ticket)
        _end(ctx)
    elif reading.verdict is False:
        rest = (reading.rest or "").strip(" ,.")
        if len(u.squash(rest)) >= 4:
            _reopen(ctx, rest)
        else:
            state.requested_slot = WHY_SLOT
            ctx.say("utter_fixed_ask_why", ticket=ticket)
    elif not state.slots.get(_TRIES):
        state.slots[_TRIES] = 1
        ctx.say("utter_fixed_yes_no", ticket=ticket)
    else:
        _end(ctx)
        return False
    return True


def _reopen(ctx: TurnContext, words: str) -> None:
    ticket = ctx.state.slots.get("fixed_ticket")
    ctx.state.slots["fixed_words"] = words[:1000]
    ctx.run_action("action_reopen_request")
    ctx.event("request_reopened", ticket=ticket, words=words[:500])
    _end(ctx)


def _end(ctx: TurnContext) -> None:
    queue = ctx.state.queue
    ctx.state.reset()
    ctx.state.queue = queue
    ctx.route("answer")
