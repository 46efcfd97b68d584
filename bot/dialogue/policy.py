"""The dialogue policy: rules and forms, in one place.

Read top to bottom, :func:`decide` is the whole conversation design:

1. a handed-off conversation stays with its agent (the bot is silent);
2. emergencies always win and tell the resident to call 119/112 first;
3. global words: restart, cancel, language, delete my data, stop reminders;
4. whatever the bot asked last (rating, ticket, confirmation, a form slot);
5. otherwise the recognised intent: answer, open a form, look up a status,
   hand off, or ask one clarifying question when unsure.

The policy talks to the world only through :class:`TurnContext` (say, run an
action, hand off), so it knows nothing about channels or stores.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bot.messages import Button
from bot.nlu.entities import first

if TYPE_CHECKING:
    from bot.dialogue.context import TurnContext

_YES = re.compile(r"^(예|네|넹|넵|넴|응|웅|어|그래|좋아|맞아|맞습니다|맞아요|동의|접수|ㅇㅇ|ㅇㅋ|ok|okay|yes|yeah|yep|sure|y|confirm|1)"
                  r"(?![가-힣a-z])|^(예|네)[,.!\s]|^(네|예)요|^(좋아요|맞아요|그래요|그렇게 해주세요|접수해 ?주세요)", re.IGNORECASE)
_NO = re.compile(r"^(아니|아뇨|아니요|아니오|싫어|안 ?돼|no|nope|nah|n|2|동의 ?안|거절)(?![a-z])", re.IGNORECASE)
_CANCEL = re.compile(r"^(취소|그만|안 ?할래|됐어요|신고 ?취소|접수 ?취소|cancel|stop it|never ?mind|forget it)", re.IGNORECASE)
_RESTART = re.compile(r"^(처음으로|처음부터|다시 ?시작|리셋|restart|start over|reset|/start)(?![a-z])", re.IGNORECASE)
_DELETE = re.compile(r"(내|제|개인)\s*(정보|데이터|기록).{0,6}(삭제|지워)|delete my (data|information|info)", re.IGNORECASE)
_SHOW_DATA = re.compile(r"(내|제)\s*(개인)?\s*(정보|데이터|기록)\s*(보기|보여|확인|조회|열람)|(show|see|view) my (data|information|info)", re.IGNORECASE)
_LINK_PHONE = re.compile(r"(전화\s*번호|휴대\s*폰|핸드폰|휴대전화)\s*(번호)?\s*(연결|인증|등록)|(link|verify) my (phone|number)", re.IGNORECASE)
_OTP_CODE = re.compile(r"^\s*(\d{6})\s*$")
_TO_EN = re.compile(r"^(english|영어로?|in english|speak english)(?![a-z가-힣])", re.IGNORECASE)
_TO_KO = re.compile(r"^(korean|한국어로?|한국말로?)(?![a-z가-힣])", re.IGNORECASE)
#: Stop the centre's reminders on any channel (an SMS "STOP" is the SMS channel's: it stops all texts).
_REMINDERS_OFF = re.compile(r"^(수신 ?거부|알림 ?(그만|끄기|꺼 ?주세요|해제|중지|거부|받지 ?않을래요)|"
                            r"stop reminders|no more reminders|unsubscribe|stop)[.!]?$", re.IGNORECASE)
_RATING = re.compile(r"^\s*([1-5])\s*(점|stars?|/\s*5)?\s*$", re.IGNORECASE)
_CORRECTION = re.compile(
    r"^(?:(?:아니(?:요|오)?|아뇨|no)[,.\s]*)?(주소|위치|장소|내용|설명|시간|언제|날짜|address|location|place|description|time|when)"
    r"\s*(?:는|은|가|이|를|을|:|is|should be)?\s*(.+)$", re.IGNORECASE)
_SLOT_WORDS = {"주소": "location", "위치": "location", "장소": "location", "address": "location",
               "location": "location", "place": "location", "내용": "description", "설명": "description",
               "description": "description", "시간": "when", "언제": "when", "날짜": "when", "time": "when",
               "when": "when"}
_EMERGENCY_WORDS = re.compile(
    r"(불이 ?났|불났|화재|연기가 ?(많이|가득)|사람이 ?쓰러|쓰러졌어요.*(사람|아버지|어머니|엄마|아빠|할머니|할아버지|아이|애)|"
    r"숨을? ?안 ?쉬|숨을 ?못 ?쉬|의식이 ?없|심정지|피를? ?많이|피가 ?많이|칼을|흉기|살려|폭발|가스가? ?(새|누출)|"
    r"물에 ?빠졌|갇혔|깔렸|자살|죽을 ?것 ?같|응급|구급차|"
    r"\bfire\b|not breathing|unconscious|heart attack|bleeding|help me|trapped|drowning|gas leak|explosion|"
    r"\bknife\b|\bgun\b|ambulance|suicide|collapsed)", re.IGNORECASE)

EMERGENCY_LABEL = "conv.emergency"


def is_yes(text: str) -> bool:
    return bool(_YES.match(text.strip()))


def is_no(text: str) -> bool:
    return bool(_NO.match(text.strip()))


def looks_like_emergency(text: str) -> bool:
    """Words that mean a life may be at stake; a false alarm is cheaper than a miss."""
    return bool(_EMERGENCY_WORDS.search(text))


def decide(ctx: TurnContext) -> None:
    """Run the rules for one message. Everything it does goes through ``ctx``."""
    state, text = ctx.state, ctx.text

    if state.handed_off:
        if ctx.is_emergency:
            ctx.say("utter_emergency", hints={"emergency": True})
        ctx.pause()
        return

    if ctx.is_empty:
        ctx.say("utter_empty")
        return
    if not text and not state.active_form:
        # A photo, location or contact with no words, outside a form.
        if ctx.message.attachment("contact"):
            ctx.say("utter_contact_linked")
        else:
            ctx.say("utter_attachment_received")
        return

    if ctx.is_emergency:
        emergency(ctx)
        return

    if _RESTART.match(text):
        ctx.command("restart")
        state.reset()
        ctx.event("reset")
        ctx.say("utter_restart")
        return
    if _TO_EN.match(text) or _TO_KO.match(text):
        ctx.command("language")
        state.lang = ctx.lang = "en" if _TO_EN.match(text) else "ko"
        ctx.event("language", lang=state.lang)
        ctx.say("utter_greet")
        return
    if _SHOW_DATA.search(text):
        ctx.command("show_data")
        # The inbox, which holds the store, fills in the reply (see bot/inbox.py).
        ctx.route("answer")
        ctx.event("show_data")
        return
    if _LINK_PHONE.search(text) and not state.active_form:
        ctx.command("link_phone")
        ask_phone_link(ctx)
        return
    if _REMINDERS_OFF.match(text) and not (state.active_form and text.lower() == "stop"):
        ctx.command("reminders_off")
        state.reminders = False
        ctx.event("contact_consent", consent=False)
        ctx.say("utter_reminder_off")
        return
    if _DELETE.search(text):
        ctx.command("delete_data")
        state.reset()
        state.awaiting = "delete_confirm"
        ctx.say("utter_delete_confirm", buttons=ctx.yes_no())
        return

    if state.awaiting and handle_awaiting(ctx):
        return
    if state.active_form:
        continue_form(ctx)
        return
    if state.clarify_options and ctx.forced_label is None and ctx.low_confidence:
        # Still unsure after one clarification: a person takes over.
        handoff(ctx, state.last_department or "general", reason="clarify_failed")
        return
    respond_to_intent(ctx)


def emergency(ctx: TurnContext) -> None:
    """119/112 first, then an urgent hand-off to the safety department."""
    ctx.state.reset()
    ctx.say("utter_emergency", hints={"emergency": True})
    ctx.say("utter_emergency_handoff")
    handoff(ctx, "safety", reason="emergency", announce=False)


def handle_awaiting(ctx: TurnContext) -> bool:
    """Answer what the bot asked for last. False when the message is about something else."""
    state, text = ctx.state, ctx.text
    awaiting = state.awaiting
    if awaiting == "rating":
        m = _RATING.match(text)
        state.awaiting = None
        if m:
            ctx.command("rating")
            ctx.event("feedback", rating=int(m.group(1)))
            ctx.say("utter_rating_thanks")
            return True
        return False
    if awaiting == "reminder_consent":
        state.awaiting = None
        if not (is_yes(text) or is_no(text)):
            return False
        ctx.answered()
        state.reminders = is_yes(text)
        if state.reminders:
            ctx.event("contact_consent", consent=True)
            ctx.say("utter_reminder_on")
        else:
            ctx.say("utter_reminder_declined")
        return True
    if awaiting == "delete_confirm":
        state.awaiting = None
        ctx.command("delete_data")
        if is_yes(text):
            ctx.event("delete_data")
            ctx.say("utter_data_deleted")
        else:
            ctx.say("utter_delete_cancelled")
        return True
    if awaiting == "after_hours_message":
        # Free text about the resident's problem: the classifier's label says what it is about.
        state.awaiting = None
        ctx.event("callback_message", text=text, department=state.handoff_department or "general")
        ctx.say("utter_after_hours_message_taken")
        return True
    if awaiting == "otp_phone":
        state.awaiting = None
        phone = first(ctx.entities, "phone")
        if phone:
            ctx.command("link_phone")
            request_code(ctx, phone)
            return True
        return False
    if awaiting == "otp_code":
        state.awaiting = None
        m = _OTP_CODE.match(text)
        if m:
            ctx.command("link_phone")
            # The inbox checks the code against the store and answers (see bot/inbox.py).
            ctx.route("answer")
            ctx.event("otp_verify", phone=state.slots.pop("otp_phone", None), code=m.group(1))
            return True
        state.slots.pop("otp_phone", None)
        return False
    if awaiting == "ticket":
        ticket = first(ctx.entities, "ticket")
        state.awaiting = None
        if ticket:
            ctx.answered("conv.request_status")
            check_status(ctx, ticket)
            return True
        if ctx.label == "conv.request_status" or ctx.low_confidence:
            ctx.answered("conv.request_status")
            ctx.say("utter_status_not_found", ticket=text[:40])
            return True
        return False
    state.awaiting = None
    return False


def ask_phone_link(ctx: TurnContext) -> None:
    """"전화번호 연결": prove a phone number with a code by SMS, so channels become one resident."""
    phone = first(ctx.entities, "phone")
    if phone:
        request_code(ctx, phone)
    else:
        ctx.state.awaiting = "otp_phone"
        ctx.route("answer")
        ctx.say("utter_ask_phone")


def request_code(ctx: TurnContext, phone: str) -> None:
    """The inbox issues and texts the code, then tells the resident (see bot/inbox.py)."""
    ctx.state.awaiting = "otp_code"
    ctx.state.slots["otp_phone"] = phone
    ctx.route("answer")
    ctx.event("otp_request", phone=phone)


def respond_to_intent(ctx: TurnContext) -> None:
    """No open question: act on what the resident said."""
    state, label = ctx.state, ctx.label
    k = ctx.knowledge
    if ctx.low_confidence and ctx.forced_label is None:
        clarify(ctx)
        return
    state.clarify_options = []
    state.clarify_count = 0
    dept = k.department_of(label)
    if dept and dept != "general":
        state.last_department = dept

    if label in k.faq:
        ctx.route("answer", department=dept)
        ctx.run_action("action_answer_faq")
        offer_reminder(ctx, label)
    elif label in k.services:
        start_form(ctx, label)
    elif label == "conv.request_status":
        ticket = first(ctx.entities, "ticket")
        if ticket:
            check_status(ctx, ticket)
        else:
            # Without a number: the resident's own latest requests, if the store knows any;
            # a number given next still looks that one up.
            state.awaiting = "ticket"
            ctx.route("status")
            ctx.run_action("action_list_my_requests")
            listed = int(state.slots.pop("my_requests", 0) or 0)
            if listed:
                ctx.event("status_lookup", listed=listed, found=True)
            else:
                ctx.say("utter_ask_ticket")
    elif label == "conv.human":
        handoff(ctx, state.last_department or "general", reason="asked_for_person")
    elif label == "conv.greet":
        ctx.route("smalltalk")
        ctx.say("utter_greet")
    elif label == "conv.thanks":
        ctx.route("smalltalk")
        ctx.say("utter_thanks")
    elif label == "conv.goodbye":
        ctx.route("smalltalk")
        ctx.say("utter_goodbye", hints={"end_call": True})
    else:  # conv.out_of_scope
        ctx.route("smalltalk")
        ctx.say("utter_out_of_scope", buttons=[ctx.button("btn_human", "/conv.human")])


def offer_reminder(ctx: TurnContext, topic: str) -> None:
    """After an answer about a topic with due dates (``deadlines`` in config.yml): offer to remind
    the resident before the next one, once per conversation. A yes is the resident's consent to be
    contacted (``Resident.contact_consent``), without which ``pcrm reminders`` sends nothing."""
    if ctx.state.reminders is not None or topic not in (ctx.knowledge.config.get("deadlines") or {}):
        return
    ctx.state.awaiting = "reminder_consent"
    ctx.say("utter_reminder_offer", buttons=ctx.yes_no())


def clarify(ctx: TurnContext) -> None:
    """One question with the two or three likeliest meanings as buttons."""
    state = ctx.state
    options = [lab for lab, _ in ctx.ranking if lab not in ("conv.out_of_scope", "conv.greet",
                                                            "conv.thanks", "conv.goodbye")][:3]
    state.clarify_options = options
    state.clarify_count += 1
    ctx.route("clarify")
    buttons = [Button(ctx.knowledge.label_name(lab, ctx.lang), f"/{lab}") for lab in options]
    buttons.append(ctx.button("btn_human", "/conv.human"))
    ctx.say("utter_clarify", buttons=buttons)


def check_status(ctx: TurnContext, ticket: str) -> None:
    ctx.state.slots["ticket"] = ticket
    ctx.route("status")
    ctx.run_action("action_check_status")
    ctx.event("status_lookup", ticket=ticket, found=bool(ctx.state.slots.get("status_found")))


# --- forms -------------------------------------------------------------------------------------

def start_form(ctx: TurnContext, service_code: str) -> None:
    """Open the form of ``service_code``, keeping whatever the first message already said."""
    state = ctx.state
    state.reset()
    state.active_form = service_code
    state.slots["service_code"] = service_code
    ctx.event("form_started", service_code=service_code)
    fill_from_message(ctx, first_message=True)
    ask_next(ctx)


def fill_from_message(ctx: TurnContext, first_message: bool = False) -> None:
    """Put entities (and, for the slot just asked, the text itself) into the form's slots."""
    state, slots = ctx.state, ctx.state.slots
    loc = ctx.message_location()
    if loc:
        slots.update(loc)
    else:
        address = first(ctx.entities, "address")
        if address and not slots.get("location"):
            slots["location"] = address
    when = first(ctx.entities, "when")
    if when and not slots.get("when"):
        slots["when"] = when
    photo = ctx.message.attachment("photo")
    if photo:
        slots["media_url"] = photo.url or photo.file_id
    if first_message:
        # A report that already says something concrete is its own short description.
        if len(ctx.text) >= 8:
            slots.setdefault("description", ctx.text[:500])
        return
    asked = state.requested_slot
    if asked == "consent":
        if is_yes(ctx.text):
            slots["consent"] = True
        elif is_no(ctx.text):
            slots["consent"] = False
    elif asked == "location" and not loc and ctx.text:
        # The answer to "where?" is the place as the resident put it, landmarks and all.
        slots["location"] = _strip_polite(ctx.text)[:300]
    elif asked == "description" and ctx.text:
        slots["description"] = ctx.text[:500]
    elif asked == "when" and ctx.text and not slots.get("when"):
        slots["when"] = ctx.text[:100]


_POLITE_TAIL = re.compile(r"\s*(이에요|예요|입니다|이요|요|이라고요|로 해주세요|으로 해주세요|로요|으로요)?[.!~]*$")


def _strip_polite(text: str) -> str:
    """"중앙로 12 앞이요" → "중앙로 12 앞": the value without the sentence ending."""
    return _POLITE_TAIL.sub("", text).strip() or text


def missing_slots(ctx: TurnContext) -> list[str]:
    service = ctx.knowledge.services[ctx.state.active_form or ""]
    return [s for s in service.slots if ctx.state.slots.get(s) in (None, "")]


def ask_next(ctx: TurnContext) -> None:
    """Ask for the next missing slot, or show the summary for confirmation."""
    state = ctx.state
    service = ctx.knowledge.services[state.active_form or ""]
    missing = missing_slots(ctx)
    ctx.route("collect", department=service.department, service_code=service.code)
    name = service.name(ctx.lang)
    if not missing:
        state.requested_slot = None
        state.awaiting_confirm = True
        s = state.slots
        consent = ctx.knowledge.render("btn_yes" if s.get("consent") else "btn_no", ctx.lang)
        ctx.say("utter_confirm_request", service=name, location=s.get("location", "-"),
                description=s.get("description", "-"), when=s.get("when") or "-", consent=consent,
                buttons=[ctx.button("btn_yes", ctx.knowledge.render("btn_yes", ctx.lang)),
                         ctx.button("btn_cancel", ctx.knowledge.render("btn_cancel", ctx.lang))])
        return
    slot = missing[0]
    state.requested_slot = slot
    if slot == "location":
        ctx.say("utter_ask_location", service=name, hints={"request_location": True})
    elif slot == "description":
        ctx.say("utter_ask_description", service=name)
    elif slot == "when":
        ctx.say("utter_ask_when")
    else:
        ctx.say("utter_ask_consent", buttons=ctx.yes_no())


def continue_form(ctx: TurnContext) -> None:
    """The resident answered a form question, corrected something, cancelled, or confirmed."""
    state, text = ctx.state, ctx.text
    wants_person = ctx.label == "conv.human" and ctx.confidence >= 0.6
    if not wants_person:
        ctx.answered(state.active_form)
    if _CANCEL.match(text) or ctx.forced_label == "cancel":
        code = state.active_form
        state.reset()
        ctx.event("form_cancelled", service_code=code)
        ctx.route("answer")
        ctx.say("utter_request_cancelled")
        return
    if wants_person:
        service = ctx.knowledge.services[state.active_form or ""]
        handoff(ctx, service.department, reason="asked_for_person")
        return
    correction = _CORRECTION.match(text)
    if correction and (state.awaiting_confirm or is_no(text) or state.requested_slot != correction.group(1)):
        slot = _SLOT_WORDS.get(correction.group(1).lower())
        value = _strip_polite(correction.group(2).strip())
        if slot:
            state.slots[slot] = value
            ctx.event("slot", name=slot, value=value)
            ctx.say("utter_correction_ack")
            ask_next(ctx)
            return
    if state.awaiting_confirm:
        if is_yes(text):
            state.awaiting_confirm = False
            ctx.run_action("action_open_service_request")
            ticket = state.slots.get("ticket")
            service = ctx.knowledge.services[state.active_form or ""]
            ctx.route("request", department=service.department, service_code=service.code, ticket=ticket)
            ctx.event("request_opened", ticket=ticket, service_code=service.code,
                      department=service.department, **_request_fields(state.slots))
            state.last_department = service.department
            state.reset()
            return
        if is_no(text):
            code = state.active_form
            state.reset()
            ctx.event("form_cancelled", service_code=code)
            ctx.say("utter_request_cancelled")
            return
        ask_next(ctx)  # something else: show the summary again
        return
    fill_from_message(ctx)
    ask_next(ctx)


def _request_fields(slots: dict[str, Any]) -> dict[str, Any]:
    keys = ("location", "description", "when", "consent", "lat", "long", "media_url")
    return {k: slots.get(k) for k in keys if slots.get(k) is not None}


# --- hand-off ----------------------------------------------------------------------------------

def handoff(ctx: TurnContext, department: str, reason: str, announce: bool = True) -> None:
    """Give the conversation to a person; after hours, take a message for a call-back."""
    state = ctx.state
    is_open = ctx.office_open()
    summary = ctx.summary()
    form = state.active_form
    state.reset()
    # The action reads these two slots: set them after the reset, not before.
    state.slots["handoff_department"] = department
    state.slots["office_open"] = is_open
    if announce or not is_open:
        ctx.run_action("action_handoff")
    state.handed_off = is_open
    state.handoff_department = department
    if not is_open:
        state.awaiting = "after_hours_message"
    priority = ctx.priority(department)
    ctx.route("handoff", department=department, priority=priority, service_code=form)
    ctx.event("handoff", department=department, priority=priority, reason=reason, summary=summary,
              after_hours=not is_open)
