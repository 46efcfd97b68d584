"""What the policy may do during one turn: say things, run actions, route, record events.

Keeping these verbs in one small class is what lets the policy stay a readable
list of rules, and lets the engine collect replies and events in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bot.dialogue.state import DialogueState
from bot.knowledge import Knowledge
from bot.messages import Button, Event, Message, Reply, Routing
from bot.nlu.model import Parse
from bot.routing import priority_for

if TYPE_CHECKING:
    from bot.kb.articles import Article
    from bot.kb.retrieval import KnowledgeBase

#: Labels of turns the policy understood by rule, outside the catalog's intents (see ``command``).
SYSTEM_PREFIX = "sys."

ActionRunner = Callable[["TurnContext", str], Coroutine[Any, Any, None]]


class TurnContext:
    """One turn in progress. The policy mutates ``state`` and calls the verbs below."""

    def __init__(self, message: Message, state: DialogueState, parse: Parse, knowledge: Knowledge,
                 clarify_below: float, office_open: Callable[[], bool], emergency_min: float = 0.3,
                 kb: KnowledgeBase | None = None, *, runner: Callable[[TurnContext, str], None],
                 parser: Callable[[str, str], Parse], next_open: Callable[[str], str],
                 hours: Callable[[str], str]) -> None:
        """``runner`` runs a custom action, ``parser`` re-reads part of the message, ``next_open``
        and ``hours`` describe the office hours: the engine's, handed in so the policy needs no
        engine."""
        self._runner, self._parser, self._next_open, self._hours = runner, parser, next_open, hours
        self.message = message
        self.state = state
        self.parse = parse
        self.knowledge = knowledge
        #: The articles residents' questions are answered from (bot/dialogue/questions.py).
        self.kb = kb
        #: Articles close to an unsure message, offered by ``policy.clarify`` beside its candidates.
        self.kb_suggestions: list[Article] = []
        self.lang = parse.lang
        self.text = parse.normalized
        self.entities = parse.entities
        self.ranking = parse.ranking
        self.forced_label: str | None = None
        self.label = parse.label
        self.confidence = parse.confidence
        if self.text.startswith("/") and self.text[1:] in knowledge.labels:
            # A quick-reply button carries its intent, as Rasa's "/intent" payloads do.
            self.forced_label = self.label = self.text[1:]
            self.confidence = 1.0
        self._clarify_below = clarify_below
        self._emergency_min = emergency_min
        self._office_open = office_open
        self.replies: list[Reply] = []
        self.events: list[Event] = []
        self.routing = Routing("answer")
        self.pending_actions: list[str] = []
        self.paused = False
        #: Set by :meth:`answered` or :meth:`command`: the label the turn is recorded under.
        self.understood_as: str | None = None

    # --- facts -------------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return not self.text and not self.message.attachments

    @property
    def is_emergency(self) -> bool:
        """Emergency label with at least a modest confidence (keyword hits come in at 0.9)."""
        return self.label == "conv.emergency" and self.confidence >= self._emergency_min

    @property
    def low_confidence(self) -> bool:
        return self.forced_label is None and self.confidence < self._clarify_below

    def office_open(self) -> bool:
        return self._office_open()

    def next_open(self) -> str:
        """When people are back, in the conversation's language ("내일(금) 09:00")."""
        return self._next_open(self.lang)

    def hours(self) -> str:
        """Office hours as a phrase ("평일 09:00–18:00")."""
        return self._hours(self.lang)

    def reparse(self, text: str) -> Parse:
        """NLU on part of the message (two problems in one message; the topic of a person request)."""
        return self._parser(text, self.lang)

    def channel_phone(self) -> str | None:
        """The number the channel itself carries (SMS and voice), formatted for people, else None."""
        if self.message.channel not in ("twilio_sms", "twilio_voice"):
            return None
        sender = self.message.sender_id
        digits = sender[1:] if sender.startswith("+") else sender
        if not digits.isdigit():
            return None  # anonymous caller
        if digits.startswith("82"):
            digits = "0" + digits[2:]
        if len(digits) == 11:
            return f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
        if len(digits) == 10:
            head = 2 if digits.startswith("02") else 3
            return f"{digits[:head]}-{digits[head:-4]}-{digits[-4:]}"
        return sender

    def priority(self, department: str) -> int:
        return priority_for(self.label, department)

    def message_location(self) -> dict[str, Any] | None:
        """Slots from a shared location or typed coordinates, if the message has them."""
        att = self.message.attachment("location")
        if att and att.lat is not None and att.long is not None:
            text = att.address or self._address_of(att.lat, att.long)
            return {"location": text, "lat": att.lat, "long": att.long}
        for e in self.entities:
            if e["entity"] == "coordinates":
                v = e["value"]
                return {"location": self._address_of(v["lat"], v["long"]), "lat": v["lat"], "long": v["long"]}
        return None

    def _address_of(self, lat: float, long: float) -> str:
        """A shared point read back as the nearest district address ("한빛로 118 (한빛동) 부근"), from
        the local gazetteer (bot/geo.py); coordinates only outside the district."""
        from bot.geo import gazetteer

        found = gazetteer().reverse(lat, long)
        return found.label(self.lang) if found is not None else f"{lat:.6f}, {long:.6f}"

    def summary(self) -> str:
        """A line or two for the agent who takes over: what the resident wanted and said."""
        k = self.knowledge
        intents = [k.label_name(i, "ko") for i in self.state.recent_intents[-3:]]
        parts = [f"최근 의도: {', '.join(intents)}" if intents else ""]
        form = self.state.active_form
        if form:
            filled = {s: v for s, v in self.state.slots.items()
                      if s in ("location", "description", "when") and v}
            names = {"location": "위치", "description": "내용", "when": "시각"}
            said = ", ".join(f"{names[s]} {v}" for s, v in filled.items())
            parts.append(f"작성 중 민원: {k.label_name(form, 'ko')}" + (f" ({said})" if said else ""))
        parts.append(f"마지막 메시지: {self.parse.text[:200]}")
        return " / ".join(p for p in parts if p)

    # --- verbs -------------------------------------------------------------------------------
    def say(self, key: str, buttons: list[Button] | None = None, hints: dict[str, Any] | None = None,
            **values: Any) -> None:
        """Queue the response ``key`` in the conversation's language."""
        self.replies.append(Reply(self.knowledge.render(key, self.lang, **values), buttons or [], hints or {}))

    def button(self, title_key: str, payload: str) -> Button:
        return Button(self.knowledge.render(title_key, self.lang), payload)

    def yes_no(self) -> list[Button]:
        return [self.button("btn_yes", self.knowledge.render("btn_yes", self.lang)),
                self.button("btn_no", self.knowledge.render("btn_no", self.lang))]

    def answered(self, topic: str | None = None) -> None:
        """This message answered the question the bot asked last, about ``topic`` (default: the
        label of the turn that asked it). The turn is then recorded under that topic, with full
        confidence, not under whatever the classifier made of the bare answer: "예" scores as
        ``faq.vaccination`` (예방접종), "3" or a street name as anything, and such labels would
        skew analytics, tag the resident with needs they never had, and fill the low-confidence
        review with answers that were understood."""
        recent = self.state.recent_intents
        self.understood_as = topic or (recent[-1] if recent else None)

    def command(self, name: str) -> None:
        """This message was a command the policy recognised by rule ("처음으로", "영어로", "수신거부",
        "내 정보 삭제", …) or the answer to a command's own question (the 예 of a deletion, the code
        of a phone link, a 1–5 rating): recorded as ``sys.<name>`` at full confidence. No catalog intent fits
        these, and the classifier's guess ("수신거부" → ``waste.bulky_pickup`` 0.27) would put an
        understood command in the supervisors' "not understood" list and its training export."""
        self.understood_as = f"{SYSTEM_PREFIX}{name}"

    def run_action(self, name: str) -> None:
        """Run a rasa_sdk action now (the engine supplies the runner)."""
        self._runner(self, name)

    def route(self, action: str, **kw: Any) -> None:
        self.routing = Routing(action, **kw)

    def event(self, type_: str, **data: Any) -> None:
        self.events.append(Event(type_, data))

    def pause(self) -> None:
        """The conversation belongs to an agent: no bot reply, the message goes to them."""
        self.paused = True
        self.route("paused", department=self.state.handoff_department)
        self.event("paused", department=self.state.handoff_department)
