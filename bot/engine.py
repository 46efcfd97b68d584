"""The dialogue engine: ``Engine.handle(Message) -> Turn``.

One engine serves every channel. A turn is: load the conversation state, run
NLU, let the policy decide (running rasa_sdk actions for answers, requests,
status and hand-off), save the state, return replies, events and the routing
decision. If anything in NLU or an action fails, the resident gets an apology
and a hand-off, never silence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from actions import backend as action_backend
from bot.dialogue import policy
from bot.dialogue.context import SYSTEM_PREFIX, TurnContext
from bot.dialogue.state import DialogueState, InMemoryStateStore, StateStore
from bot.dialogue.understanding import classifier_emergency_stands
from bot.kb.retrieval import KnowledgeBase, shared_knowledge_base
from bot.knowledge import Knowledge
from bot.messages import Event, Message, Reply, Routing, Turn
from bot.metrics import timed
from bot.nlu.language import conversation_lang, detect
from bot.nlu.model import NLU, Parse, ensure_model
from bot.nlu.normalize import clean
from bot.routing import BusinessHours
from bot.service_requests import InMemoryRequestStore, RequestStore
from bot.settings import Settings, get_settings

log = logging.getLogger("pcrm.engine")
#: Keys of a rasa_sdk response dict that are not template values.
_NOT_VALUES = frozenset(("response", "template", "text", "buttons", "elements", "custom", "image", "attachment"))

Parser = Callable[[str, str | None], Parse]


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that does not really wait (our actions don't) without an event loop.

    rasa_sdk's executor is ``async`` for the sake of its HTTP server; in-process
    our actions finish on the first step, so the turn stays synchronous and never
    touches the caller's event loop (FastAPI's).
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an in-process action awaited I/O; run such actions on a rasa_sdk action server")


class Engine:
    """The one dialogue engine. Thread-safe; one instance per process."""

    def __init__(self, *, knowledge: Knowledge | None = None, nlu: NLU | Parser | None = None,
                 states: StateStore | None = None, requests: RequestStore | None = None,
                 settings: Settings | None = None, clock: Callable[[], datetime] | None = None,
                 kb: KnowledgeBase | None = None) -> None:
        self.settings = settings or get_settings()
        config = self.settings.config()
        self.knowledge = knowledge or Knowledge(self.settings.pcrm_nlu_dir, config)
        self._nlu = nlu
        self._kb = kb
        self._nlu_lock = threading.Lock()
        self.states = states or InMemoryStateStore()
        self.requests = requests or InMemoryRequestStore()
        self.clock = clock or (lambda: datetime.now(UTC))
        m = self.settings.municipality()  # config.yml typed; its defaults are bot/municipality.py's
        self.hours = BusinessHours(m)
        nlu_cfg = m.nlu
        self.clarify_below = nlu_cfg.clarify_below
        self.emergency_override = nlu_cfg.emergency_override
        self.emergency_min = nlu_cfg.emergency_min_confidence
        self.emergency_classifier_min = nlu_cfg.emergency_classifier_min
        self.max_chars = self.settings.pcrm_max_message_chars
        self._executor: Any = None
        self._sdk: tuple[dict[str, Callable[..., Any]], type, Callable[[dict[str, Any]], Any]] | None = None

    @property
    def executor(self) -> Any:
        """rasa_sdk's ActionExecutor with our actions, built on first use.

        Imported lazily: rasa_sdk pulls in Sanic, which `pcrm route` never needs and
        which would add about a second to its cold start.
        """
        if self._executor is None:
            from rasa_sdk.executor import ActionExecutor

            import actions

            executor = ActionExecutor()
            executor.register_package(actions)
            self._executor = executor
        return self._executor

    def rasa_sdk(self) -> tuple[dict[str, Callable[..., Any]], type, Callable[[dict[str, Any]], Any]]:
        """The executor's registered actions, ``CollectingDispatcher`` and ``Tracker.from_dict``, looked up once."""
        if self._sdk is None:
            from rasa_sdk.executor import CollectingDispatcher
            from rasa_sdk.interfaces import Tracker

            self._sdk = (self.executor.actions, CollectingDispatcher, Tracker.from_dict)
        return self._sdk

    @property
    def kb(self) -> KnowledgeBase:
        """The knowledge base (``PCRM_KB_DIR``, default ``nlu_data/knowledge``), built on first use."""
        if self._kb is None:
            with self._nlu_lock:
                if self._kb is None:
                    kb_dir = self.settings.pcrm_kb_dir or self.settings.pcrm_nlu_dir / "knowledge"
                    try:
                        self._kb = shared_knowledge_base(kb_dir, self.settings.config(),
                                                         cache_dir=self.settings.pcrm_model_dir,
                                                         nlu_dir=self.settings.pcrm_nlu_dir)
                    except Exception:  # noqa: BLE001 - requests and small talk must work without it
                        log.exception("knowledge base %s failed to load; questions go to the catalog", kb_dir)
                        self._kb = KnowledgeBase([], self.settings.config(), embedder=None)
        return self._kb

    # --- NLU ---------------------------------------------------------------------------------
    @property
    def nlu(self) -> NLU | Parser:
        """The NLU, trained on first use if the cache has no model for the current data."""
        if self._nlu is None:
            with self._nlu_lock:
                if self._nlu is None:
                    if self.engine_kind == "rasa":  # NLU from a Rasa server's /model/parse
                        from bot.nlu.rasa_backend import RasaNLU

                        self._nlu = RasaNLU(self.settings.rasa_url or "")
                    else:
                        path = ensure_model(self.settings.pcrm_nlu_dir / "nlu", self.settings.pcrm_model_dir)
                        self._nlu = NLU(path)
        return self._nlu

    @property
    def engine_kind(self) -> str:
        """``builtin`` or ``rasa``: ``PCRM_ENGINE`` if set, else ``engine`` in config.yml."""
        return (self.settings.pcrm_engine or self.settings.municipality().engine).lower()

    def parse(self, text: str, lang_hint: str | None = None) -> Parse:
        """NLU only (``pcrm route``), with the emergency override applied."""
        nlu = self.nlu
        with timed("nlu"):
            result = nlu.parse(text, lang_hint) if isinstance(nlu, NLU) else nlu(text, lang_hint)
        if not self.emergency_override:
            return result
        words = policy.looks_like_emergency(result.normalized)
        if words and (result.label != policy.EMERGENCY_LABEL or result.confidence < 0.9):
            # The words that mean danger count as a confident emergency, whatever the classifier said.
            result.ranking = [(policy.EMERGENCY_LABEL, max(result.confidence, 0.9))] + \
                [(lab, score) for lab, score in result.ranking if lab != policy.EMERGENCY_LABEL]
            result.label, result.confidence = policy.EMERGENCY_LABEL, max(result.confidence, 0.9)
        elif result.label == policy.EMERGENCY_LABEL and not words and not classifier_emergency_stands(
                result.normalized, result.confidence, self.emergency_classifier_min):
            # The classifier alone, on words that ask for information ("화재보험 문의", "응급실 있는
            # 병원") or deny danger ("응급상황 아니고요"), or unsure on a few words ("싫어요"): the next
            # meaning, not the emergency script.
            rest = [(lab, score) for lab, score in result.ranking if lab != policy.EMERGENCY_LABEL]
            result.ranking = rest
            result.label, result.confidence = rest[0] if rest else ("conv.out_of_scope", 0.0)
        return result

    def route(self, text: str, lang_hint: str | None = None) -> dict[str, Any]:
        """``pcrm route`` output: label, department, confidence, language, entities."""
        p = self.parse(text, lang_hint)
        return {"label": p.label, "department": self.knowledge.department_of(p.label),
                "confidence": round(p.confidence, 4), "lang": p.lang, "entities": p.entities}

    # --- turns -------------------------------------------------------------------------------
    def handle(self, message: Message) -> Turn:
        """Decide what to do with one inbound message."""
        started = time.perf_counter()
        state = self.states.load(message.conversation_key)
        turn = self.decide(message, state)
        self.states.save(state)
        turn.latency_ms = (time.perf_counter() - started) * 1000
        return turn

    def decide(self, message: Message, state: DialogueState) -> Turn:
        """One turn on a state the caller loaded (and will save): :meth:`handle` without the store.

        The inbox loads the state in the transaction that stores the inbound message and
        saves it in the one that stores the turn. ``state`` is updated in place.
        """
        started = time.perf_counter()
        try:
            turn = self._decide(message, state)
        except Exception:  # noqa: BLE001 - any fault becomes an apology and a hand-off
            log.exception("turn failed for %s", message.conversation_key)
            turn = self._fail(message, state)
        state.turns += 1
        turn.latency_ms = (time.perf_counter() - started) * 1000
        return turn

    def _decide(self, message: Message, state: DialogueState) -> Turn:
        text = message.text or ""
        too_long = len(text) > self.max_chars
        if not text.strip() or too_long:
            parse = Parse(text, "", state.lang if not text.strip() else detect(clean(text[:2000]), state.lang),
                          "conv.out_of_scope", 0.0)
        else:
            parse = self.parse(text, message.lang or state.lang)
        parse.lang = self._conversation_lang(parse, message, state)
        state.lang = parse.lang
        ctx = TurnContext(message, state, parse, self.knowledge, self.clarify_below,
                          lambda: self.hours.is_open(self.clock()), self.emergency_min, kb=self.kb,
                          runner=self._run_action, parser=self.parse,
                          next_open=lambda lang: self.hours.describe_next_open(self.clock(), lang),
                          hours=self.hours.describe)
        if too_long:
            ctx.say("utter_too_long")
        else:
            policy.decide(ctx)
        intent: dict[str, Any] = {"label": ctx.label, "confidence": round(ctx.confidence, 4), "lang": ctx.lang}
        if ctx.understood_as:
            # An awaited answer or a command: recorded as understood; the classifier's guess kept beside.
            intent["nlu"] = {"label": ctx.label, "confidence": intent["confidence"]}
            ctx.label, ctx.confidence = ctx.understood_as, 1.0
            intent.update(label=ctx.label, confidence=1.0)
        if not ctx.paused and parse.normalized and not ctx.label.startswith(SYSTEM_PREFIX):
            state.remember_intent(ctx.label)  # what residents want, for routing and agents' summaries
        events = [Event("intent", intent),
                  *([Event("entities", {"entities": parse.entities})] if parse.entities else []),
                  *ctx.events]
        # What was sent besides words (a shared location, a photo) is kept with the message, so the
        # agent's history shows it instead of an empty bubble.
        shared = [{"entity": "attachment", "kind": a.kind, "lat": a.lat, "long": a.long, "url": a.url,
                   "address": a.address} for a in message.attachments if a.kind in ("location", "photo")]
        return Turn(conversation_key=message.conversation_key, lang=ctx.lang, label=ctx.label,
                    confidence=ctx.confidence, replies=ctx.replies, events=events,
                    routing=ctx.routing, entities=[*parse.entities, *shared] if shared else parse.entities)

    def _conversation_lang(self, parse: Parse, message: Message, state: DialogueState) -> str:
        """The language to answer in: :func:`bot.nlu.language.conversation_lang` on this turn."""
        return conversation_lang(parse.normalized, parse.lang, state.lang, message.lang, first_message=not state.turns)

    def _fail(self, message: Message, state: DialogueState) -> Turn:
        """The apology-and-hand-off turn used when NLU or an action crashed."""
        lang = state.lang or "ko"
        state.reset()
        is_open = self.hours.is_open(self.clock())
        dept = state.last_department or "general"
        state.handed_off = is_open
        state.handoff_department = dept if is_open else None
        replies = [Reply(self.knowledge.render("utter_error" if is_open else "utter_error_after_hours", lang))]
        if not is_open:  # nobody to hand over to: the call-back offer, as for any after-hours hand-off
            state.awaiting = "callback_offer"
            state.callback = {"department": dept, "reason": "error", "message": message.text[:500]}
            replies.append(Reply(self.knowledge.render(
                "utter_callback_offer", lang, next_open=self.hours.describe_next_open(self.clock(), lang))))
        return Turn(conversation_key=message.conversation_key, lang=lang, label="error", confidence=0.0,
                    replies=replies,
                    events=[Event("error", {}), Event("handoff", {
                        "department": dept, "priority": 10, "reason": "error",
                        "summary": f"처리 중 오류 / 마지막 메시지: {message.text[:200]}",
                        "after_hours": not state.handed_off})],
                    routing=Routing("handoff", department=dept))

    def _run_action(self, ctx: TurnContext, name: str) -> None:
        """Run a rasa_sdk action in-process and apply what it returns."""
        # This engine's stores, even if tests make several.
        action_backend.configure(self.knowledge, self.requests, self.kb)
        slots = dict(ctx.state.slots)
        slots["lang"] = ctx.lang
        tracker = {
            "sender_id": ctx.message.conversation_key, "slots": slots,
            "latest_message": {"text": ctx.parse.text, "intent": {"name": ctx.label, "confidence": ctx.confidence},
                               "entities": ctx.entities, "intent_ranking": []},
            "events": [], "paused": False, "followup_action": None, "active_loop": {},
            "latest_action_name": None,
        }
        events, responses = self.call_action(name, tracker)
        for ev in events:
            if ev.get("event") == "slot":
                ctx.state.slots[ev["name"]] = ev["value"]
        for msg in responses:
            key = msg.get("response") or msg.get("template")
            values = {k: v for k, v in msg.items() if k not in _NOT_VALUES and v is not None}
            if key:
                ctx.say(key, **values)
            elif msg.get("text"):
                ctx.replies.append(Reply(msg["text"]))

    def call_action(self, name: str, tracker: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(events, responses)`` of action ``name`` on a tracker dict, as ``ActionExecutor.run`` gives them.

        The executor's steps (the action it registered, ``Tracker.from_dict``, a fresh
        ``CollectingDispatcher``, a stream left open closed, events without an ``event`` key
        dropped) without what only its HTTP server needs: the payload's domain bookkeeping and
        the pydantic result model that re-validates and copies every event and response (an
        action without SQL took 7–10 µs through the executor, 2.5–3 µs so). The domain is the
        empty one the engine always sent. ``tests/test_engine_actions.py`` checks the results
        equal the executor's. Our actions are synchronous; an ``async`` one is driven by
        :func:`_drive`, which refuses one that really waits.
        """
        actions, dispatcher_cls, tracker_from_dict = self._sdk or self.rasa_sdk()
        run = actions.get(name)
        if run is None:
            from rasa_sdk.interfaces import ActionNotFoundException

            raise ActionNotFoundException(name)
        dispatcher = dispatcher_cls()
        events = run(dispatcher, tracker_from_dict(tracker), {})
        if events is None:
            events = []
        elif not isinstance(events, list) and isinstance(events, Coroutine):
            events = _drive(events) or []
        if dispatcher.is_streaming_active:
            _drive(dispatcher.stream_end())
        valid = [ev for ev in events if isinstance(ev, dict) and ev.get("event")]
        if len(valid) != len(events):
            log.error("action %s returned events that are not rasa_sdk event dicts; ignored", name)
        return valid, dispatcher.messages

    # --- console hooks -----------------------------------------------------------------------
    def release(self, conversation_key: str, ask_rating: bool = True) -> list[Reply]:
        """An agent closed the hand-off: the bot resumes, asking for a rating first."""
        state = self.states.load(conversation_key)
        state.handed_off = False
        state.handoff_department = None
        state.emergency = None
        state.reset()
        replies = []
        if ask_rating:
            state.awaiting = "rating"
            replies.append(Reply(self.knowledge.render("utter_ask_rating", state.lang),
                                 hints={"rating": True}))
        self.states.save(state)
        return replies

    def take_over(self, conversation_key: str, department: str) -> None:
        """An agent took the hand-off (or answered it): from now on the resident's messages go to the
        agent, not the bot. After hours the dialogue had only queued the request (the bot kept
        talking, asking for a call-back number); without this the resident's reply to the agent
        would be answered by the bot instead."""
        state = self.states.load(conversation_key)
        if state.handed_off and state.handoff_department == department and not state.awaiting:
            return
        state.reset()
        state.awaiting = None
        state.callback = {}
        state.handed_off = True
        state.handoff_department = department
        self.states.save(state)

    def restart(self, conversation_key: str, lang: str = "ko") -> None:
        """A new phone call starts a fresh dialogue in ``lang``: a form, question or hand-off left
        over from an earlier call of the same number is cleared (the earlier hand-off's queue row is
        left for its agent to close). Unchanged states are not saved (most calls start clean)."""
        state = self.states.load(conversation_key)
        if state.active_form or state.awaiting or state.handed_off or state.clarify_options or state.lang != lang:
            state.reset()
            state.handed_off = False
            state.handoff_department = None
            state.lang = lang
            self.states.save(state)

    def forget(self, conversation_key: str) -> None:
        """Drop the dialogue state (the resident deleted their data)."""
        self.states.delete(conversation_key)

