"""The dialogue policy: rules, forms and conversation repair, in one place.

Read top to bottom, :func:`decide` is the whole conversation design:

1. a handed-off conversation stays with its agent (the bot is silent);
2. emergencies always win: 119/112 first, safety advice for what is happening, and an urgent
   hand-off; after hours the bot stays in emergency mode and never defers to "the next business day";
3. global words: restart, language (the pending question asked again in the new language), my
   data, phone link, stop reminders;
4. whatever the bot asked last (a call-back, a number, a rating, a ticket, a confirmation, a form
   slot). A reply that is not an answer is *understood first* (the repair patterns: a question is
   answered and the pending question asked again, another report is queued, "잠깐만요" pauses,
   "됐어요" cancels in any words, a correction in natural words fixes the slot it names, a request
   for a person is honoured); a resident's extra words are kept, never dropped;
5. otherwise the recognised intent: answer, open a form (two problems become two reports), look
   up a status, hand off to the department the words name, or ask one clarifying question.

The policy talks to the world only through :class:`TurnContext` (say, run an action, hand off),
so it knows nothing about channels or stores. What a reply *is* (yes/no, a place, a time, a
correction, a cancel) is decided in :mod:`bot.dialogue.understanding`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bot.dialogue import questions
from bot.dialogue import understanding as u
from bot.messages import Button
from bot.municipality import LOW_CONFIDENCE
from bot.nlu.entities import ROAD_ADDRESS, first
from bot.nlu.normalize import strip_fillers

if TYPE_CHECKING:
    from bot.dialogue.context import TurnContext

_RESTART = re.compile(r"^(처음으로|처음부터|다시 ?시작|리셋|restart|start over|reset|/start)(?![a-z])", re.IGNORECASE)
_DELETE = re.compile(r"(내|제|개인)\s*(정보|데이터|기록).{0,6}(삭제|지워)|delete my (data|information|info)", re.IGNORECASE)
_SHOW_DATA = re.compile(r"(내|제)\s*(개인)?\s*(정보|데이터|기록)\s*(보기|보여|확인|조회|열람)|(show|see|view) my (data|information|info)", re.IGNORECASE)
_LINK_PHONE = re.compile(r"(전화\s*번호|휴대\s*폰|핸드폰|휴대전화)\s*(번호)?\s*(연결|인증|등록)|(link|verify) my (phone|number)", re.IGNORECASE)
_OTP_CODE = re.compile(r"^\s*(\d{6})\s*$")
#: The whole message asks for a language ("영어로요", "English please"); a message that only
#: mentions one ("영어로 된 등본 필요해요", "Korean language classes for foreigners") is a question.
_TO_EN = re.compile(r"^\s*(english|영어로?|in english|speak english|english please|영어로 ?(해|말해|대답해) ?주세요)"
                    r"\s*(요|please|pls)?\s*[.!?~]*\s*$", re.IGNORECASE)
_TO_KO = re.compile(r"^\s*(korean|한국어로?|한국말로?|in korean|korean please|한국어로 ?(해|말해) ?주세요)"
                    r"\s*(요|please|pls)?\s*[.!?~]*\s*$", re.IGNORECASE)
#: Stop the centre's reminders on any channel (an SMS "STOP" is the SMS channel's: it stops all texts).
_REMINDERS_OFF = re.compile(r"^(수신 ?거부|알림 ?(그만|끄기|꺼 ?주세요|해제|중지|거부|받지 ?않을래요)|"
                            r"stop reminders|no more reminders|unsubscribe|stop)[.!]?$", re.IGNORECASE)
_RATING = re.compile(r"^\s*([1-5])\s*(점|stars?|/\s*5)?\s*$", re.IGNORECASE)
#: "가로등 고장 신고하려고요": words that say *that* one reports, not *what* is wrong.
_REPORT_WORDS = re.compile(
    r"(신고|접수|민원|제보|요청|신청|문의)\s*(하려고|하고\s*싶|할게|할래|하려는데|좀|해\s*주세요|합니다|해요|드려요|드릴게요|"
    r"드리려고|하러|넣으려고|넣을게)?\S*|(하려고요|하고\s*싶어요|싶은데요|싶어요|할게요|해요|합니다|있어요|있는데요|"
    r"i\s*(?:want|would like|'d like)\s*to\s*(?:report|file|make)|report(?:ing)?|file|a complaint|complaint about|"
    r"please|request|there is|there's)", re.IGNORECASE)
#: "신고하려고요", "I want to report": the message asks to report rather than says what is wrong.
_REQUEST_PHRASE = re.compile(
    r"(신고|접수|민원|제보|신청|요청)\s*(하려고|하고\s*싶|할게|할래|하려는데|드려요|드릴게요|드리려고|합니다|해요|해\s*주세요|요\b|좀)|"
    r"넣을게요|넣으려고|넣고\s*싶|(want|would like|'d like|need) to (report|file|make|request|book|complain)|"
    r"can i (report|file)|how (do|can) i report|report(?:ing)? (a|an|the|some)\b", re.IGNORECASE)
#: What is left of a report once place, time, service name and reporting words are gone, and says nothing.
_NOISE = re.compile(
    r"\b(a|an|the|to|i|my|of|for|is|at|in|on|it|this|there|here|want|would|like|need|about|some|one|please|hi|hello)\b|"
    r"(하는데요?|인데요?|그런데|근데|거든요|부터|까지|에서|에게|한테|관련|관해|대해|좀|버리려고요?|버릴려고요?|버리고\s*싶어요|"
    r"넣을게요|넣으려고요?|넣고\s*싶어요|할게요|하려고요?|싶어요|원해요|부탁해요|부탁드려요|드려요|해\s*주세요|해요|"
    r"차량|차가|것|거|건|문제|상황|부분|쪽|관련|\bvehicle\b|\bcar\b|\bthing\b|\bissue\b|\bproblem\b|"
    r"내놓으려고요?|수거해\s*주세요|하려고\s*하는데요?|하고요|안녕하세요|여보세요|저기요)|"
    r"(?<![가-힣])[을를이가은는에도요의](?![가-힣])", re.IGNORECASE)
_MAX_SLOT_TRIES = 2
_PUBLISH = re.compile(r"^\s*(비?공개|공개\s*(해\s*(도|주세요)|할게요|동의|OK)|지도에\s*(올려|공개)|make it public|public|show it on the map|"
                      r"private|keep it private)\b", re.IGNORECASE)

EMERGENCY_LABEL = "conv.emergency"
#: A label this sure is acted on without asking: a person asked for, a new report begun mid-form.
#: (Below :data:`LOW_CONFIDENCE` nothing is acted on; in between, only with a cue such as "또".)
SURE = 0.6
SMALLTALK = ("conv.greet", "conv.thanks", "conv.goodbye")


def is_yes(text: str) -> bool:
    return u.yes_no(text).verdict is True


def is_no(text: str) -> bool:
    return u.yes_no(text).verdict is False


def looks_like_emergency(text: str) -> bool:
    """Words that mean a life may be at stake (:func:`bot.dialogue.understanding.looks_like_emergency`)."""
    return u.looks_like_emergency(text)


def decide(ctx: TurnContext) -> None:
    """Run the rules for one message. Everything it does goes through ``ctx``."""
    state, text = ctx.state, ctx.text

    if state.handed_off:
        # The agent has the conversation; in an emergency the bot still answers each message at
        # once (119 first), since the agent may take a minute to read it.
        if not state.emergency and not ctx.is_emergency and (u.is_cancel(text) or _BACK_TO_BOT.search(text)):
            withdraw_handoff(ctx)
            return
        if ctx.is_emergency:
            state.emergency = state.emergency or u.emergency_kind(text)
            ctx.say("utter_emergency", hints={"emergency": True})
            ctx.say(f"utter_emergency_advice_{u.emergency_kind(text)}")
        elif state.emergency:
            if u.denies_emergency(text):
                state.emergency = None
            else:
                ctx.event("emergency_note", text=ctx.parse.text[:500], kind=state.emergency)
                ctx.say("utter_emergency_followup_open", hints={"emergency": True})
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
    if state.emergency and emergency_followup(ctx):
        return

    if _RESTART.match(text):
        ctx.command("restart")
        state.reset()
        state.queue, state.callback = [], {}
        ctx.event("reset")
        ctx.say("utter_restart")
        return
    if _TO_EN.match(text) or _TO_KO.match(text):
        ctx.command("language")
        state.lang = ctx.lang = "en" if _TO_EN.match(text) else "ko"
        ctx.event("language", lang=state.lang)
        if not ask_pending_again(ctx):
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
    if _REMINDERS_OFF.match(text) and not ((state.active_form or state.awaiting) and text.lower() == "stop"):
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
    if wants_person(ctx):
        handoff(ctx, named_department(ctx), reason="asked_for_person")
        return
    if state.last_ticket and _HOW_LONG.search(text) and re.search(r"(그거|그것|그\s*신고|제\s*신고|접수한|it\b|my report)",
                                                                  text, re.IGNORECASE):
        check_status(ctx, state.last_ticket)  # "그거 언제쯤 고쳐져요?" right after a ticket
        return
    if state.clarify_options and ctx.forced_label is None and ctx.low_confidence:
        # Still unsure after one clarification: a person takes over.
        handoff(ctx, state.last_department or "general", reason="clarify_failed")
        return
    respond_to_intent(ctx)


_BACK_TO_BOT = re.compile(r"(그냥\s*(챗봇|여기서|봇|너한테|혼자)|상담원\s*(안|필요\s*없|연결\s*(취소|안))|연결\s*취소|"
                          r"never\s*mind.{0,20}(agent|person)|(i'?ll|let me)\s*(just\s*)?(use|ask) the (bot|chatbot)|"
                          r"no (need for|longer need) (an agent|a person))", re.IGNORECASE)


def withdraw_handoff(ctx: TurnContext) -> None:
    """The resident, still waiting, no longer wants a person: the bot is back, and a request said
    in the same breath ("됐어요 그냥 여기서 할게요, 가로등 고장 신고요") is taken up at once."""
    state = ctx.state
    state.handed_off = False
    department = state.handoff_department
    state.handoff_department = None
    state.reset()
    ctx.command("handoff_withdrawn")
    ctx.event("handoff_withdrawn", department=department)
    ctx.say("utter_handoff_withdrawn")
    rest = _besides_change_of_mind(ctx.text)
    other = ctx.reparse(rest) if len(u.squash(rest)) >= 4 else None
    if other is not None and other.label in ctx.knowledge.services and other.confidence >= LOW_CONFIDENCE:
        start_form(ctx, other.label, text=rest)
    else:
        ctx.route("answer")


_CHANGE_WORDS = re.compile(r"(아니다|아니에요|됐어요|됐고|괜찮아요|그냥|여기서|챗봇|봇이랑|할게요|할래요|취소|no thanks|never ?mind|"
                           r"actually|instead|here)", re.IGNORECASE)


def _besides_change_of_mind(text: str) -> str:
    """"아니다 그냥 여기서 할게요, 가로등 고장 신고요" → "가로등 고장 신고요": what they want instead."""
    tail = text.split(",")[-1] if "," in text else text
    return re.sub(r"\s+", " ", _CHANGE_WORDS.sub(" ", tail)).strip(" ,.")


def ask_pending_again(ctx: TurnContext) -> bool:
    """Ask the open question again (after a language switch, an aside, a pause). False if none."""
    state = ctx.state
    if state.active_form:
        ask_next(ctx)
        return True
    if state.awaiting in _CALLBACK_QUESTIONS:
        _CALLBACK_QUESTIONS[state.awaiting](ctx)
        return True
    return False


# --- emergencies --------------------------------------------------------------------------------

def emergency(ctx: TurnContext) -> None:
    """119/112 first with advice for what is happening, then an urgent hand-off to safety.

    After hours nobody at the office can take it now: the bot says so honestly, records what the
    resident says as an urgent item for the first person in, and stays in emergency mode (each
    further message repeats 119 and is added to the record) instead of promising a call-back.
    """
    state = ctx.state
    kind = u.emergency_kind(ctx.text)
    state.reset()
    state.queue, state.callback = [], {}
    ctx.say("utter_emergency", hints={"emergency": True})
    ctx.say(f"utter_emergency_advice_{kind}")
    summary = ctx.summary()
    priority = ctx.priority("safety")
    state.emergency = kind
    if ctx.office_open():
        ctx.say("utter_emergency_handoff")
        state.handed_off = True
        state.handoff_department = "safety"
        after_hours = False
    else:
        ctx.say("utter_emergency_after_hours", next_open=ctx.next_open())
        after_hours = True
    ctx.route("handoff", department="safety", priority=priority)
    ctx.event("handoff", department="safety", priority=priority, reason="emergency", summary=summary,
              after_hours=after_hours)


def emergency_followup(ctx: TurnContext) -> bool:
    """After hours, in emergency mode: every message is added to the urgent record, 119 repeated.

    The mode ends when the resident says it is not (or no longer) an emergency, thanks or says
    goodbye, or clearly moves on to an ordinary request. False lets the turn go on as usual.
    """
    state, text = ctx.state, ctx.text
    moved_on = (ctx.confidence >= 0.8 and (ctx.label in ctx.knowledge.services or ctx.label in ctx.knowledge.faq)
                and not u.looks_like_emergency(text))
    if u.denies_emergency(text) or ctx.label in ("conv.thanks", "conv.goodbye") or u.is_cancel(text) or moved_on:
        state.emergency = None
        if moved_on:
            return False
        ctx.answered(EMERGENCY_LABEL)
        ctx.say("utter_emergency_cleared")
        return True
    ctx.answered(EMERGENCY_LABEL)
    ctx.event("emergency_note", text=ctx.parse.text[:500], kind=state.emergency)
    ctx.route("handoff", department="safety", priority=ctx.priority("safety"))
    ctx.say("utter_emergency_followup", hints={"emergency": True})
    return True


# --- what the bot asked last ---------------------------------------------------------------------

def handle_awaiting(ctx: TurnContext) -> bool:
    """Answer what the bot asked for last. False when the message is about something else."""
    state, text = ctx.state, ctx.text
    awaiting = state.awaiting
    if awaiting in _CALLBACK_HANDLERS:
        return _CALLBACK_HANDLERS[awaiting](ctx)
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
        verdict = u.yes_no(text).verdict
        if verdict is None:
            return False
        ctx.answered()
        state.reminders = verdict
        if state.reminders:
            ctx.event("contact_consent", consent=True)
            ctx.say("utter_reminder_on")
        else:
            ctx.say("utter_reminder_declined")
        return True
    if awaiting == "delete_confirm":
        state.awaiting = None
        if u.yes_no(text).verdict is None and (u.is_question(text) or not ctx.low_confidence):
            return False  # something else (a question): answered as such, and nothing is deleted
        ctx.command("delete_data")
        if is_yes(text):
            ctx.event("delete_data")
            ctx.say("utter_data_deleted")
        else:
            ctx.say("utter_delete_cancelled")
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
        if ctx.label == "conv.request_status" or (ctx.low_confidence and not u.is_question(text)):
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


# --- intents -------------------------------------------------------------------------------------

def read_past_openers(ctx: TurnContext) -> None:
    """"여보세요 저기 아침부터 수돗물이 안 나와요", "hi, um, where do I renew my passport": a
    caller's opener is not the message. The classifier, trained on whole requests, reads the
    greeting; when it says small talk and more than the opener was said, the words after it are
    read again and that reading stands (unless it is small talk too: "안녕하세요 감사합니다")."""
    if ctx.forced_label is not None or ctx.label not in SMALLTALK:
        return
    core = strip_fillers(ctx.text, anywhere=True)
    if core == ctx.text or len(u.squash(core)) < 4:
        return
    again = ctx.reparse(core)
    if again.label in SMALLTALK:
        return
    ctx.label, ctx.confidence, ctx.ranking = again.label, again.confidence, again.ranking
    ctx.entities = ctx.entities or again.entities


def respond_to_intent(ctx: TurnContext) -> None:
    """No open question: act on what the resident said."""
    read_past_openers(ctx)
    if ctx.is_emergency:
        emergency(ctx)
        return
    if questions.answer_question(ctx):  # a question the knowledge base answers (or declines)
        return
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
        reports = split_reports(ctx) if ctx.forced_label is None else []
        if len(reports) > 1:
            # A place said once ("… 중앙로 12 앞이에요") belongs to every report that names none.
            place = u.longest(ROAD_ADDRESS, ctx.text)
            state.queue = [{"service_code": code, "text": part, "location": place} for code, part in reports[1:]]
            ctx.say("utter_two_reports", first=k.services[reports[0][0]].name(ctx.lang),
                    second=", ".join(k.services[c].name(ctx.lang) for c, _ in reports[1:]))
            start_form(ctx, reports[0][0], text=reports[0][1], location=place)
        else:
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
        handoff(ctx, named_department(ctx), reason="asked_for_person")
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
    if ctx.state.reminders is not None or topic not in ctx.knowledge.municipality.deadlines:
        return
    if ctx.state.active_form:
        return  # an aside inside a form: the form's question comes next, not another one
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
    buttons = [*questions.suggestion_buttons(ctx), *buttons][:3]  # knowledge-base articles first
    buttons.append(ctx.button("btn_human", "/conv.human"))
    ctx.say("utter_clarify", buttons=buttons)


def check_status(ctx: TurnContext, ticket: str) -> None:
    ctx.state.slots["ticket"] = ticket
    ctx.route("status")
    ctx.run_action("action_check_status")
    ctx.event("status_lookup", ticket=ticket, found=bool(ctx.state.slots.get("status_found")))


def split_reports(ctx: TurnContext) -> list[tuple[str, str]]:
    """"가로등도 나가고 도로에 구멍도 났어요" → two reports, each with its own words.

    Only messages with a joint (그리고, "-고", a comma, "and") are split, and only when each part
    is confidently a different service: one long report is never cut in two.
    """
    parts = [p.strip() for p in re.split(r"(?<=[가-힣]고)\s+|(?<=[는한인은]데)\s+|그리고\s*|또\s+|,\s*|;\s*|\.\s+|"
                                         r"\s+and\s+(?:also\s+)?|\s+also\s+",
                                         ctx.text) if p and len(p.strip()) >= 4]
    if len(parts) < 2:
        return []
    found: list[tuple[str, str]] = []
    for part in parts:
        p = ctx.reparse(part)
        if p.label in ctx.knowledge.services and p.confidence >= 0.5:
            if found and found[-1][0] == p.label:
                found[-1] = (p.label, f"{found[-1][1]} {part}")
            elif all(code != p.label for code, _ in found):
                found.append((p.label, part))
        elif found:
            found[-1] = (found[-1][0], f"{found[-1][1]} {part}")
    if len(found) < 2:
        return []
    # A place said once ("… 중앙로 12 앞이에요") belongs to every report that names none.
    return found


# --- asking for a person ---------------------------------------------------------------------------

def wants_person(ctx: TurnContext) -> bool:
    """The resident asks for a person, in the classifier's view or in so many words.

    Unmistakable words ("연결해 주세요", "직접 얘기하고 싶어요", "talk to a person") count even
    inside a report or a question; looser ones ("담당 부서") only outside them, since "담당 부서
    전화번호가 뭐예요?" is a question to answer and a report may mention staff.
    """
    if ctx.label == "conv.human" and (ctx.confidence >= SURE or ctx.forced_label):
        return True
    if u.asks_for_person(ctx.text, strong=True):
        return True
    return u.asks_for_person(ctx.text) and not u.is_question(ctx.text) and ctx.label not in ctx.knowledge.services


def named_department(ctx: TurnContext) -> str:
    """The department a request for a person names or implies, else the recent topic's, else general.

    "수도요금이 이상하게 많이 나왔어요, 담당 부서랑 직접 얘기할게요" → water: the words around the
    request for a person are understood on their own.
    """
    k = ctx.knowledge
    text = ctx.text
    for word, code in _DEPARTMENT_WORDS:
        if re.search(word + r"\s*(담당|부서|과|팀|쪽|department|dept|office)", text, re.IGNORECASE):
            return code
    for code, dept in k.departments.items():
        names = [str(dept.get("ko", "")), str(dept.get("en", ""))]
        short = str(dept.get("ko", ""))[:-1] if str(dept.get("ko", "")).endswith("과") else None
        if any(n and n.lower() in text.lower() for n in names) or (short and len(short) >= 3 and short in text):
            return code
    topic = _without_person_words(text)
    if len(u.squash(topic)) >= 4:
        p = ctx.reparse(topic)
        dept = k.department_of(p.label)
        if dept and not p.label.startswith("conv.") and p.confidence >= 0.35:
            return dept
    for lab, score in ctx.ranking:
        dept = k.department_of(lab)
        if dept and dept != "general" and not lab.startswith("conv.") and score >= 0.3:
            return dept
    for word, code in _DEPARTMENT_WORDS:
        if re.search(word, topic, re.IGNORECASE):
            return code
    return ctx.state.last_department or "general"


#: "교통 담당자", "환경 담당 부서", "the tax department": a department named by its field.
_DEPARTMENT_WORDS = (("교통|주차|traffic|parking", "traffic"), ("환경|소음|environment", "environment"),
                     ("세무|세금|tax", "tax"), ("청소|쓰레기|waste|sanitation", "waste"), ("도로|road", "roads"),
                     ("공원|녹지|park", "parks"), ("수도|상하수도|water", "water"), ("보건|health", "health"),
                     ("복지|welfare", "welfare"), ("민원여권|여권|civil|passport", "civil"), ("안전|safety", "safety"))
_PERSON_WORDS = re.compile(
    r"(상담원|상담사|담당자|담당\s*부서|담당|부서|직원|사람|직접|얘기|이야기|통화|연결|바꿔|하고\s*싶어요|하고\s*싶|할게요|할래요|"
    r"해\s*주세요|주세요|이랑|하고|랑|님|좀|요|talk to|speak (?:to|with)|someone|a person|an agent|agent|human|"
    r"please|directly|the department|i want to|i'?d like to|can i|could i|connect me|with)", re.IGNORECASE)


def _without_person_words(text: str) -> str:
    """"수도요금이 많이 나왔어요, 담당 부서랑 직접 얘기할게요" → "수도요금이 많이 나왔어요": the topic."""
    return _PERSON_WORDS.sub(" ", text).strip(" ,.")


# --- forms -------------------------------------------------------------------------------------

def start_form(ctx: TurnContext, service_code: str, text: str | None = None, location: str | None = None) -> None:
    """Open the form of ``service_code``, keeping whatever the message (or ``text``) already said."""
    state = ctx.state
    queue = state.queue
    state.reset()
    state.queue = queue
    state.active_form = service_code
    state.slots["service_code"] = service_code
    ctx.event("form_started", service_code=service_code)
    prefill(ctx, ctx.text if text is None else text, use_attachments=text is None)
    state.slots["_said"] = (ctx.parse.text if text is None else text)[:500]
    if location and not state.slots.get("location"):
        state.slots["location"] = location
    ask_next(ctx)


def start_queued(ctx: TurnContext) -> None:
    """The next report the resident mentioned earlier, if any, with what they said about it."""
    queue = ctx.state.queue
    ctx.state.queue = queue[1:]
    if queue:
        item = queue[0]
        ctx.say("utter_next_report", service=ctx.knowledge.services[item["service_code"]].name(ctx.lang))
        start_form(ctx, item["service_code"], text=item["text"], location=item.get("location"))


def prefill(ctx: TurnContext, text: str, use_attachments: bool = True) -> None:
    """Slots from the report's first words: the longest address, a real time, a real description."""
    slots = ctx.state.slots
    loc = ctx.message_location() if use_attachments else None
    if loc:
        slots.update(loc)
    else:
        address = u.longest(ROAD_ADDRESS, text) or _place_entity(ctx, text)
        if address:
            after = text[text.find(address) + len(address):] if address in text else ""
            slots["location"] = address + u.landmark_tail(after)
    when = u.time_expression([e for e in ctx.entities if str(e.get("value", "")) in text])
    if when:
        slots["when"] = when
    if use_attachments:
        photo = ctx.message.attachment("photo")
        if photo:
            slots["media_url"] = photo.url or photo.file_id
    if has_description(ctx, text, slots.get("location"), slots.get("when")):
        slots["description"] = text[:500]


def _place_entity(ctx: TurnContext, text: str) -> str | None:
    """The longest ``address`` entity (landmarks, 동 names) inside ``text``."""
    values = [str(e["value"]) for e in ctx.entities if e["entity"] == "address" and str(e["value"]) in text]
    return max(values, key=len) if values else None


def has_description(ctx: TurnContext, text: str, location: str | None, when: str | None) -> bool:
    """Whether a report says *what* is wrong, beyond naming the service.

    A statement about the problem ("가로등이 어제부터 꺼져 있어요", "streetlight broken at 3
    Saesol-ro") is its own description. A request to report ("불법주정차 신고하려고요", "I want to
    report an illegally parked car") is one only if something is left once the service's name,
    the reporting words, the place and the time are taken out.
    """
    if not _REQUEST_PHRASE.search(text):
        return len(u.squash(text)) >= 6
    rest = text
    for part in (location, when):
        if part:
            rest = rest.replace(part, " ")
    service = ctx.knowledge.services.get(ctx.state.active_form or "")
    name_chars = set(re.sub(r"\W", "", service.ko)) if service else set()
    stems = {w.lower()[:4] for w in re.split(r"\W+", service.en) if len(w) >= 3} if service else set()
    rest = _REPORT_WORDS.sub(" ", u.strip_fillers(rest))
    rest = _NOISE.sub(" ", rest)
    kept: list[str] = []
    for word in rest.split():
        if re.fullmatch(r"[가-힣]{1,5}", word) and set(word) <= name_chars:
            continue  # "불법 주차" for 불법주정차: the service's own name in other words
        if re.fullmatch(r"[A-Za-z]+", word) and word.lower()[:4] in stems:
            continue
        kept.append(word)
    korean = "".join(w for w in kept if re.search(r"[가-힣]", w))
    english = [w for w in kept if re.fullmatch(r"[A-Za-z']+", w)]
    return len(u.squash(korean)) >= 2 or len(english) >= 2


def missing_slots(ctx: TurnContext) -> list[str]:
    service = ctx.knowledge.services[ctx.state.active_form or ""]
    return [s for s in service.slots if ctx.state.slots.get(s) in (None, "")]


def ask_next(ctx: TurnContext, prefix: str | None = None) -> None:
    """Ask for the next missing slot, or show the summary for confirmation."""
    state = ctx.state
    service = ctx.knowledge.services[state.active_form or ""]
    missing = missing_slots(ctx)
    ctx.route("collect", department=service.department, service_code=service.code)
    name = service.name(ctx.lang)
    if prefix:
        ctx.say(prefix)
    # Issue 20 (field helper): once the place is known, an open request of the same service there is
    # offered first, and the offer's 예/아니요 is read here; all of it lives in bot/dialogue/duplicates.py.
    from bot.dialogue.duplicates import before_ask
    if before_ask(ctx):
        return
    if not missing:
        state.requested_slot = None
        state.awaiting_confirm = True
        s = state.slots
        consent = ctx.knowledge.render("btn_yes" if s.get("consent") else "btn_no", ctx.lang)
        publish = ctx.knowledge.render("btn_yes" if s.get("publish_consent") else "btn_no", ctx.lang)
        ctx.say("utter_confirm_request", service=name, location=s.get("location", "-"),
                description=s.get("description", "-"), when=s.get("when") or "-", consent=consent, publish=publish,
                buttons=[ctx.button("btn_yes", ctx.knowledge.render("btn_yes", ctx.lang)),
                         ctx.button("btn_cancel", ctx.knowledge.render("btn_cancel", ctx.lang))])
        return
    slot = missing[0]
    state.requested_slot = slot
    state.awaiting_confirm = False
    svc = ctx.knowledge.municipality.services.get(service.code)
    asks = svc.ask if svc is not None else {}
    if slot == "location":
        ctx.say(asks.get("location", "utter_ask_location"), service=name, hints={"request_location": True})
    elif slot == "description":
        ctx.say(asks.get("description", "utter_ask_description"), service=name)
    elif slot == "when":
        ctx.say(asks.get("when", "utter_ask_when"), service=name)
    else:
        ctx.say("utter_ask_consent", buttons=ctx.yes_no())


def add_detail(ctx: TurnContext, extra: str) -> None:
    """Keep words the resident added at any step: appended to the description, never dropped."""
    extra = extra.strip(" ,.")
    if len(u.squash(extra)) < 3:
        return
    slots = ctx.state.slots
    current = slots.get("description")
    if current and extra in current:
        return
    slots["description"] = f"{current} / {extra}"[:1000] if current else extra[:500]
    ctx.event("slot", name="description", value=slots["description"])


def continue_form(ctx: TurnContext) -> None:
    """The resident answered a form question, or did one of the repair moves around it."""
    state, text = ctx.state, ctx.text
    service = ctx.knowledge.services[state.active_form or ""]
    if u.is_cancel(text) or ctx.forced_label == "cancel":
        cancel_form(ctx)
        return
    if wants_person(ctx) and u.yes_no(text).verdict is None \
            and not u.correction(text, state.awaiting_confirm, state.requested_slot):
        handoff(ctx, service.department, reason="asked_for_person")
        return
    ctx.answered(state.active_form)
    if u.is_pause(text):
        ctx.route("collect", department=service.department, service_code=service.code)
        ctx.say("utter_pause")
        return
    fix = u.correction(text, state.awaiting_confirm, state.requested_slot)
    if fix and fix.slot in service.slots + ["location", "description"]:
        apply_correction(ctx, fix.slot, fix.value)
        return
    if state.awaiting_confirm:
        confirm(ctx)
        return
    if aside(ctx):
        return
    fill_slot(ctx)


def cancel_form(ctx: TurnContext) -> None:
    state = ctx.state
    code = state.active_form
    queue = state.queue
    state.reset()
    ctx.answered(code)
    ctx.event("form_cancelled", service_code=code)
    ctx.route("answer")
    ctx.say("utter_request_cancelled")
    state.queue = queue
    start_queued(ctx)


def apply_correction(ctx: TurnContext, slot: str, value: str) -> None:
    """"주소 잘못 말했어요 한빛로 17이에요" sets it; "내용이 틀렸어요" asks for it again."""
    state = ctx.state
    if value:
        state.slots[slot] = value
        if slot == "location":
            state.slots.pop("lat", None)
            state.slots.pop("long", None)
        ctx.event("slot", name=slot, value=value)
        ask_next(ctx, prefix="utter_correction_ack")
        return
    state.slots.pop(slot, None)
    state.awaiting_confirm = False
    ctx.event("slot", name=slot, value=None)
    ask_next(ctx, prefix="utter_correction_ask")


def confirm(ctx: TurnContext) -> None:
    """The summary was shown: yes opens the ticket, no asks what to fix, anything else is understood."""
    state, text = ctx.state, ctx.text
    publish = _PUBLISH.search(text)
    if publish:
        # Residents' own words and exact place go on the public map only if they say so (opt-in).
        state.slots["publish_consent"] = not bool(re.search(r"(비공개|안\s*돼|하지\s*마|not|don'?t|private)", text, re.IGNORECASE))
        ctx.event("slot", name="publish_consent", value=state.slots["publish_consent"])
        ask_next(ctx, prefix="utter_correction_ack")
        return
    reading = u.yes_no(text)
    if reading.verdict is True:
        if reading.rest:
            add_detail(ctx, reading.rest)
        open_request(ctx)
        return
    if reading.verdict is False:
        if state.slots.get("_fix_asked"):
            cancel_form(ctx)
            return
        state.slots["_fix_asked"] = True
        ctx.route("collect", department=ctx.knowledge.services[state.active_form or ""].department,
                  service_code=state.active_form)
        ctx.say("utter_ask_what_to_fix")
        return
    if aside(ctx):
        return
    address = u.last_address(text)
    if address:
        apply_correction(ctx, "location", address)
        return
    if len(u.squash(text)) >= 8:
        add_detail(ctx, ctx.parse.text)  # more about the problem: added, and the summary shown again
    ask_next(ctx)


def open_request(ctx: TurnContext) -> None:
    state = ctx.state
    state.slots.pop("_fix_asked", None)
    state.awaiting_confirm = False
    ctx.run_action("action_open_service_request")
    ticket = state.slots.get("ticket")
    service = ctx.knowledge.services[state.active_form or ""]
    ctx.route("request", department=service.department, service_code=service.code, ticket=ticket)
    ctx.event("request_opened", ticket=ticket, service_code=service.code,
              department=service.department, **_request_fields(state.slots))
    state.last_department = service.department
    state.last_ticket = ticket
    queue = state.queue
    state.reset()
    state.queue = queue
    start_queued(ctx)


def aside(ctx: TurnContext) -> bool:
    """A reply that is not an answer to the form's question: a question, another report, small talk.

    Understood first, then the pending question is asked again. False when it is (or may be) an
    answer. At the description step almost anything is an answer, so only questions count there.
    """
    state, text, label, k = ctx.state, ctx.text, ctx.label, ctx.knowledge
    asked = state.requested_slot
    placey = u.looks_like_place(text) or bool(ctx.message_location())
    if u.is_question(text) and not (asked == "location" and placey and not label.startswith("faq.")):
        answer_aside(ctx)
        ask_next(ctx, prefix="utter_back_to_form")
        return True
    if asked == "description":
        if label in SMALLTALK and ctx.confidence >= 0.5 and len(text) <= 12:
            ask_next(ctx, prefix="utter_thanks_short" if label == "conv.thanks" else None)
            return True
        return False
    another = re.search(r"(또|그리고|도\s|신고|근데|그런데|참|also|another|too\b|as well|by the way)", text, re.IGNORECASE)
    if label in k.services and label != state.active_form and ctx.confidence >= (LOW_CONFIDENCE if another else SURE) \
            and (not placey or another or asked != "location") and u.yes_no(text).verdict is None:
        if all(q["service_code"] != label for q in state.queue):
            state.queue.append({"service_code": label, "text": text})
        ctx.say("utter_report_queued", service=k.services[label].name(ctx.lang),
                current=k.services[state.active_form or ""].name(ctx.lang))
        ask_next(ctx)
        return True
    if label in SMALLTALK and ctx.confidence >= 0.7 and not placey and u.yes_no(text).verdict is None \
            and len(text) <= 20:
        ask_next(ctx, prefix="utter_thanks_short" if label == "conv.thanks" else None)
        return True
    return False


_HOW_LONG = re.compile(r"(얼마나\s*걸|언제\s*(까지|쯤)?\s*(처리|고쳐|해결|수거|와)|처리\s*(기간|시간)|며칠|how long|when will)",
                       re.IGNORECASE)


def answer_aside(ctx: TurnContext) -> None:
    """Answer a question asked in the middle of something else, without leaving it."""
    k, label = ctx.knowledge, ctx.label
    form = k.services.get(ctx.state.active_form or "")
    if form and _HOW_LONG.search(ctx.text):
        hours = form.expected_hours
        ctx.say("utter_expected_time", service=form.name(ctx.lang), department=k.department_name(form.department, ctx.lang),
                hours=int(hours) if hours == int(hours) else hours)
        return
    if label in k.faq and not ctx.low_confidence:
        ctx.understood_as = label
        ctx.run_action("action_answer_faq")
    elif label == "conv.request_status":
        ticket = first(ctx.entities, "ticket")
        if ticket:
            ctx.state.slots["ticket"] = ticket
            ctx.run_action("action_check_status")
        else:
            ctx.run_action("action_list_my_requests")
            if not int(ctx.state.slots.pop("my_requests", 0) or 0):
                ctx.say("utter_aside_unknown")
    else:
        ctx.say("utter_aside_unknown")


def fill_slot(ctx: TurnContext) -> None:
    """Validate the reply against the slot it answers; keep what it adds; ask the next question."""
    state, text = ctx.state, ctx.text
    slots = state.slots
    asked = state.requested_slot
    loc = ctx.message_location()
    photo = ctx.message.attachment("photo")
    if photo:
        slots["media_url"] = photo.url or photo.file_id
    if loc:
        slots.update(loc)
    tries_key = f"_tries_{asked}"
    if asked == "location" and not loc:
        if u.is_dont_know(text):
            if slots.get(tries_key):
                slots["location"] = ctx.knowledge.render("location_unknown", ctx.lang)
            else:
                slots[tries_key] = 1
                ctx.route("collect", department=ctx.knowledge.services[state.active_form or ""].department,
                          service_code=state.active_form)
                ctx.say("utter_ask_location_hint")
                return
        elif text and u.looks_like_place(text):
            address = u.last_address(text)
            if address and u.INSTEAD.search(text):  # "중앙로 50 아니고 중앙로 52예요"
                after = text[text.rfind(address) + len(address):]
                place, extra = u.strip_polite(address + u.landmark_tail(after)), ""
            else:
                place, extra = u.split_location(text, address)
            slots["location"] = place[:300]
            if extra:
                add_detail(ctx, extra)
        elif text:
            if not slots.get(tries_key) and not _plausible_answer(ctx):
                slots[tries_key] = 1
                ask_next(ctx, prefix="utter_not_a_place")
                return
            if not slots.get(tries_key) and len(u.squash(text)) >= 8:
                # Words about the problem, not a place: kept as details, the question stays open.
                slots[tries_key] = 1
                add_detail(ctx, text)
                ask_next(ctx, prefix="utter_not_a_place")
                return
            slots["location"] = u.strip_polite(text)[:300]
    elif asked == "description" and text:
        if u.is_dont_know(text):
            slots["description"] = "-"
        elif u.yes_no(text).verdict is not None and len(u.squash(text)) <= 4:
            # A bare "네" here: what the report first said stands as its description.
            slots["description"] = slots.get("_said") or "-"
        else:
            slots["description"] = text[:500]
    elif asked == "when" and text:
        if u.is_dont_know(text):
            slots["when"] = ctx.knowledge.render("when_unknown", ctx.lang)
        elif u.looks_like_time(text):
            slots["when"] = u.strip_polite(text)[:100]
        elif not slots.get(tries_key):
            slots[tries_key] = 1
            add_detail(ctx, text)
            ask_next(ctx, prefix="utter_not_a_time")
            return
        else:
            slots["when"] = u.strip_polite(text)[:100]
    elif asked == "consent":
        reading = u.yes_no(text)
        if reading.verdict is None:
            tries = int(slots.get(tries_key, 0))
            if len(u.squash(text)) >= 6:
                add_detail(ctx, text)  # a description typed at the consent question is kept
            if tries >= _MAX_SLOT_TRIES:
                slots["consent"] = False
            else:
                slots[tries_key] = tries + 1
                ask_next(ctx, prefix="utter_yes_no_please")
                return
        else:
            slots["consent"] = reading.verdict
            if reading.rest:
                add_detail(ctx, reading.rest)
    for key in [k for k in slots if k.startswith("_tries_")]:
        if key != f"_tries_{state.requested_slot}" or slots.get(state.requested_slot or "") not in (None, ""):
            slots.pop(key, None)
    ask_next(ctx)


def _plausible_answer(ctx: TurnContext) -> bool:
    """A location reply with no place words that is still not something else (small talk, a yes)."""
    if u.yes_no(ctx.text).verdict is not None:
        return False
    if ctx.label in SMALLTALK and ctx.confidence >= 0.5:
        return False
    return len(u.squash(ctx.text)) >= 3


def _request_fields(slots: dict[str, Any]) -> dict[str, Any]:
    """The slots a ticket carries (never the policy's own ``_`` bookkeeping)."""
    keys = ("location", "description", "when", "consent", "lat", "long", "media_url", "publish_consent")
    return {k: slots.get(k) for k in keys if slots.get(k) is not None}


# --- hand-off and call-backs ---------------------------------------------------------------------

def handoff(ctx: TurnContext, department: str, reason: str, announce: bool = True) -> None:
    """Give the conversation to a person; after hours, offer a call-back instead."""
    state = ctx.state
    if not ctx.office_open():
        offer_callback(ctx, department, reason)
        return
    summary = ctx.summary()
    form = state.active_form
    state.reset()
    state.queue = []
    # The action reads these two slots: set them after the reset, not before.
    state.slots["handoff_department"] = department
    state.slots["office_open"] = True
    if announce:
        ctx.run_action("action_handoff")
    state.handed_off = True
    state.handoff_department = department
    priority = ctx.priority(department)
    ctx.route("handoff", department=department, priority=priority, service_code=form)
    ctx.event("handoff", department=department, priority=priority, reason=reason, summary=summary,
              after_hours=False)


def offer_callback(ctx: TurnContext, department: str, reason: str) -> None:
    """After hours: say when people are back, queue the request, and offer a call-back.

    The request is queued for the department at once (the first person in sees it), but nobody is
    promised a call until a number is given: the channel's own (SMS, voice) when the resident
    agrees to it, or one they type, checked and read back. The resident's own words about the
    problem become the message passed on.
    """
    state = ctx.state
    summary = ctx.summary()
    message = ctx.parse.text if len(u.squash(_without_person_words(ctx.text))) >= 6 else ""
    state.reset()
    state.queue = []
    state.callback = {"department": department, "reason": reason, "message": message[:500]}
    priority = ctx.priority(department)
    ctx.route("handoff", department=department, priority=priority)
    ctx.event("handoff", department=department, priority=priority, reason=reason, summary=summary,
              after_hours=True)
    ctx.say("utter_after_hours", department=ctx.knowledge.department_name(department, ctx.lang),
            next_open=ctx.next_open(), hours=ctx.hours())
    if ctx.channel_phone():
        state.awaiting = "callback_channel_phone"
        ask_callback_channel_phone(ctx)
    else:
        state.awaiting = "callback_offer"
        ask_callback_offer(ctx)


def ask_callback_offer(ctx: TurnContext) -> None:
    ctx.say("utter_callback_offer", next_open=ctx.next_open(), buttons=ctx.yes_no())


def ask_callback_phone(ctx: TurnContext) -> None:
    ctx.say("utter_callback_ask_phone")


def ask_callback_channel_phone(ctx: TurnContext) -> None:
    ctx.say("utter_callback_channel_phone", phone=ctx.channel_phone() or "-", next_open=ctx.next_open(),
            buttons=ctx.yes_no())


def ask_callback_message(ctx: TurnContext) -> None:
    ctx.say("utter_callback_ask_message", hints={"record_message": True})


_CALLBACK_QUESTIONS = {
    "callback_offer": ask_callback_offer,
    "callback_channel_phone": ask_callback_channel_phone,
    "callback_phone": ask_callback_phone,
    "callback_message": ask_callback_message,
}


def _callback_digression(ctx: TurnContext) -> bool:
    """In the call-back questions: a change of mind, a new report or a question is understood first."""
    state, text, k = ctx.state, ctx.text, ctx.knowledge
    if u.phone_number(text):
        return False
    if u.is_cancel(text) or (u.changes_mind(text) and (ctx.label in k.services or "여기서" in text or "here" in text)):
        state.awaiting = None
        state.callback = {}
        ctx.event("callback_declined")
        rest = _besides_change_of_mind(text)
        other = ctx.reparse(rest) if len(u.squash(rest)) >= 4 else ctx.parse
        label = ctx.label if ctx.label in k.services and ctx.confidence >= 0.4 else other.label
        if label in k.services and (label == ctx.label or other.confidence >= 0.35):
            start_form(ctx, label, text=rest or None)
        else:
            ctx.route("answer")
            ctx.say("utter_callback_never_mind")
        return True
    if ctx.label in k.services and ctx.confidence >= SURE and u.yes_no(text).verdict is None \
            and state.awaiting != "callback_message":
        state.awaiting = None
        state.callback = {}
        ctx.event("callback_declined")
        start_form(ctx, ctx.label)
        return True
    if (u.is_question(text) or ctx.label in k.faq) and ctx.label in k.faq and not ctx.low_confidence \
            and u.yes_no(text).verdict is None:
        answer_aside(ctx)
        if state.awaiting == "callback_message":
            return False  # answered, and still passed on as the message
        ctx.say("utter_back_to_form")
        _CALLBACK_QUESTIONS[state.awaiting or "callback_offer"](ctx)
        return True
    return False


def _understood(ctx: TurnContext) -> None:
    ctx.answered(ctx.state.recent_intents[-1] if ctx.state.recent_intents else "conv.human")


def decline_callback(ctx: TurnContext) -> bool:
    """No call-back: nothing is promised, and the bot says when people are back."""
    ctx.state.awaiting = None
    ctx.state.callback = {}
    ctx.event("callback_declined")
    ctx.route("answer")
    ctx.say("utter_callback_declined", next_open=ctx.next_open(), hours=ctx.hours())
    return True


def on_callback_offer(ctx: TurnContext) -> bool:
    """"콜백을 요청해 드릴까요?": yes asks for a number (a number given is taken at once), no is respected."""
    state, text = ctx.state, ctx.text
    if _callback_digression(ctx):
        return True
    _understood(ctx)
    phone = u.phone_number(text)
    if phone:
        record_callback(ctx, phone)
        return True
    reading = u.yes_no(text)
    if reading.verdict is False:
        return decline_callback(ctx)
    if reading.verdict is True:
        if len(u.squash(reading.rest)) >= 8 and not state.callback.get("message"):
            state.callback["message"] = reading.rest[:500]
        state.awaiting = "callback_phone"
        ask_callback_phone(ctx)
        return True
    if len(u.squash(text)) >= 6:  # the problem in their words: kept as the message, then asked again
        state.callback["message"] = (f"{state.callback.get('message', '')} {ctx.parse.text}").strip()[:500]
    ask_callback_offer(ctx)
    return True


def _digression_or_number(ctx: TurnContext) -> bool:
    """What every call-back question does first: a digression is understood, a number is booked."""
    if _callback_digression(ctx):
        return True
    _understood(ctx)
    phone = u.phone_number(ctx.text)
    if phone:
        ctx.state.callback.pop("tries", None)
        record_callback(ctx, phone)
        return True
    return False


def on_callback_channel_phone(ctx: TurnContext) -> bool:
    """"지금 연락 주신 010-… 번호로 전화드릴까요?": yes takes it, another number replaces it."""
    state = ctx.state
    if _digression_or_number(ctx):
        return True
    reading = u.yes_no(ctx.text)
    if reading.verdict is True:
        record_callback(ctx, ctx.channel_phone() or "")
        return True
    if reading.verdict is False:
        if re.search(r"(다른|딴)\s*(번호|전화)|another|different|other number", ctx.text, re.IGNORECASE):
            state.awaiting = "callback_phone"
            ask_callback_phone(ctx)
            return True
        return decline_callback(ctx)
    ask_callback_channel_phone(ctx)
    return True


def on_callback_phone(ctx: TurnContext) -> bool:
    """A number, checked: a bad one is asked for again (twice), never stored."""
    state = ctx.state
    if _digression_or_number(ctx):
        return True
    if u.yes_no(ctx.text).verdict is False and not re.search(r"\d", ctx.text):
        return decline_callback(ctx)
    tries = int(state.callback.get("tries", 0)) + 1
    state.callback["tries"] = tries
    if tries > _MAX_SLOT_TRIES:
        state.awaiting = None
        state.callback = {}
        ctx.say("utter_callback_no_number", next_open=ctx.next_open())
        return True
    ctx.say("utter_callback_bad_phone")
    return True


def on_callback_message(ctx: TurnContext) -> bool:
    """After the call-back is booked without a message: what they say next is passed on with it.

    A number here corrects the one booked ("아니 번호 틀렸어요 010-…"); "없어요" leaves it as it is;
    anything clearly about something else goes its own way.
    """
    state, text = ctx.state, ctx.text
    phone = u.phone_number(text)
    if phone:
        _understood(ctx)
        record_callback(ctx, phone)
        return True
    if re.search(r"(번호|number).{0,6}(틀|잘못|wrong)", text, re.IGNORECASE):
        _understood(ctx)
        state.awaiting = "callback_phone"
        ask_callback_phone(ctx)
        return True
    reading = u.yes_no(text)
    if reading.verdict is False or re.fullmatch(r"(없어요|없습니다|없음|괜찮아요|됐어요|nothing|no message|that'?s all)[.!]*",
                                                text.strip(), re.IGNORECASE):
        _understood(ctx)
        state.awaiting = None
        state.callback = {}
        ctx.route("answer")
        ctx.say("utter_callback_done")
        return True
    if _callback_digression(ctx):
        return True
    _understood(ctx)
    ctx.event("callback", phone=state.callback.get("phone"), department=state.callback.get("department"),
              message=ctx.parse.text[:500], reason=state.callback.get("reason"), note=True)
    ctx.say("utter_callback_message_taken")
    state.awaiting = None
    state.callback = {}
    return True


def record_callback(ctx: TurnContext, phone: str) -> None:
    """The call-back task: the number (read back) and the message, on the department's queued item."""
    state = ctx.state
    cb = state.callback
    department = cb.get("department") or "general"
    said = u.words_besides_number(ctx.parse.text) if u.phone_number(ctx.text) else ""
    message = " / ".join(m for m in (cb.get("message") or "", said) if m)
    cb["phone"] = phone
    ctx.event("callback", phone=phone, department=department, message=message, reason=cb.get("reason"))
    ctx.route("handoff", department=department, priority=ctx.priority(department))
    ctx.say("utter_callback_recorded", department=ctx.knowledge.department_name(department, ctx.lang),
            next_open=ctx.next_open(), phone=phone)
    if message:
        ctx.say("utter_callback_fix_hint")
    else:
        ask_callback_message(ctx)
    state.awaiting = "callback_message"


_CALLBACK_HANDLERS = {
    "callback_offer": on_callback_offer,
    "callback_channel_phone": on_callback_channel_phone,
    "callback_phone": on_callback_phone,
    "callback_message": on_callback_message,
}
