"""Twilio voice channel: phone calls answered with TwiML (speech and keypad).

Call flow
    ``POST /webhooks/twilio/voice`` (call start) greets the caller in Korean and
    opens a ``<Gather input="speech dtmf" language="ko-KR">`` with the keypad menu
    (1 정보 안내, 2 민원 신고, 3 처리 상태 조회, 0 상담원; 9 English). Every answer
    comes back to ``POST /webhooks/twilio/voice/gather``: the speech transcript (or
    the key pressed, mapped to text) goes through the channel port (:mod:`bot.ports`, the inbox) as
    one :class:`Message` and the engine's replies are spoken (``<Say>``) inside the
    next ``<Gather>``. ``hints.end_call`` ends the call (``<Hangup>``); ``hints.spoken`` (a knowledge-base
    article's shorter voice version) is said instead of the text.

Sequence and retries
    Each ``<Gather>``'s action URL carries its sequence number and the call's
    state (``n``, ``lang``, ``menu``, ``miss`` and the offered options ``o``), so
    the adapter keeps no per-call memory and any worker can answer. The message id
    is ``"<CallSid>:<n>"``: a retried delivery of the same gather is recorded once
    (the store's unique delivery id) and answered with the same TwiML (a small
    cache of rendered answers; after a restart the inbox's cached replies).

No input
    Gathers use ``actionOnEmptyResult``; after two silent turns in a row the call
    goes to the general desk (``<Dial>``) in business hours, else a polite goodbye
    and ``<Hangup>``.

Hand-off
    ``Turn.routing.action == "handoff"``: the hand-off text is spoken, then in
    business hours the department's phone from ``config.yml`` is dialled (the
    dial's outcome comes to ``/webhooks/twilio/voice/dial``: busy or no answer
    falls back to a voicemail). After hours (the engine's hand-off event says
    ``after_hours``, else the port's ``open_now``) the caller leaves a voicemail
    (``<Record maxLength="120">``); ``/webhooks/twilio/voice/recording`` passes it
    to the inbox as ``"[voicemail] <RecordingUrl>"`` with a ``recording``
    attachment, which the engine takes as the call-back message of its
    after-hours hand-off (the call-back Handoff row is opened by that hand-off).

English
    Key 9 or saying "English" switches the call: gathers listen in ``en-US`` and
    replies use the English voice (``channels.twilio_voice.voice_en``). The call's
    language lives in the gather URL and changes only on the engine's
    ``language`` event, so a one-off English reply never makes the recogniser
    stop understanding a Korean caller. Each ``<Say>`` picks its voice from the
    script of its own text.

Call status
    ``POST /webhooks/twilio/voice/status`` (signed), reported to the port as a
    :class:`~bot.ports.CallStatus`: stored as a system interaction of the caller's voice
    conversation (``[call-status] <status> (<duration>s)``, label ``call.status``; a retry
    is a no-op), on the agent's timeline next to the call's transcript
    (:mod:`crm_store.channel_events`).

A new call starts a fresh dialogue (``ChannelPort.reset``, under the conversation's
lock): a form, question or hand-off left over from an earlier call of the same number
is cleared (the earlier hand-off's queue row is left for its agent to close).

A caller who withheld the number is ``anonymous:<CallSid>``: the inbox handles such a
call's turns like any other (lock, de-duplication, rate limits) and stores nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from twilio.twiml.voice_response import Gather, VoiceResponse

from bot.messages import ANONYMOUS_PREFIX, Attachment, Message, Turn
from bot.phones import normalize_phone
from bot.ports import CallStatus, ChannelPort
from bot.settings import Settings
from channels.base import ChannelAdapter
from channels.twilio_signature import check_signature, first, form_params, public_url

log = logging.getLogger("pcrm.channels.twilio_voice")

CHANNEL = "twilio_voice"
VOICE_PATH = "/webhooks/twilio/voice"
GATHER_PATH = "/webhooks/twilio/voice/gather"
RECORDING_PATH = "/webhooks/twilio/voice/recording"
DIAL_PATH = "/webhooks/twilio/voice/dial"
STATUS_PATH = "/webhooks/twilio/voice/status"

LANGUAGE = {"ko": "ko-KR", "en": "en-US"}
MAX_MISSES = 2
RECORD_SECONDS = 120

PROMPTS: dict[str, dict[str, str]] = {
    "ko": {
        "greeting": "안녕하세요, {name} 민원 콜센터입니다. 궁금한 점이나 신고하실 내용을 말씀해 주세요. "
                    "번호로 선택하시려면 정보 안내는 1번, 민원 신고는 2번, 처리 상태 조회는 3번, "
                    "상담원 연결은 0번을 눌러 주세요.",
        "ask_info": "궁금하신 내용을 말씀해 주세요. "
                    "예를 들어 쓰레기 배출 요일, 여권 발급처럼 말씀하시면 돼요.",
        "ask_report": "신고하실 내용을 말씀해 주세요. "
                      "예를 들어 가로등 고장, 도로 파손, 불법 주차처럼 말씀하시면 돼요.",
        "ticket_keys": "접수번호 숫자 열 자리를 누르고 우물 정자를 눌러 주셔도 돼요.",
        "options": "{options}. 번호를 누르시거나 말씀해 주세요.",
        "option": "{n}번 {title}",
        "not_heard": "잘 듣지 못했어요. 다시 한 번 말씀해 주세요.",
        "transfer": "상담원에게 연결해 드릴게요. 잠시만 기다려 주세요.",
        "goodbye": "응답이 없어 전화를 끊겠습니다. 필요하시면 다시 전화해 주세요. 감사합니다.",
        "busy": "죄송해요, 지금은 상담원이 모두 통화 중이에요. 삐 소리가 나면 용건과 연락처를 남겨 주세요. "
                "끝나면 우물 정자를 눌러 주세요.",
        "record_hint": "삐 소리가 나면 말씀해 주시고, 끝나면 우물 정자를 눌러 주세요.",
        "no_recording": "메시지가 녹음되지 않았어요. 다음에 다시 전화해 주세요. 감사합니다.",
        "bye": "감사합니다. 안녕히 계세요.",
        "error": "죄송해요, 일시적인 문제가 생겼어요.",
    },
    "en": {
        "greeting": "Hello, this is the {name} call center. Please tell me your question or what you want "
                    "to report. Or press 1 for information, 2 to report a problem, 3 for the status of a "
                    "request, or 0 for an agent.",
        "ask_info": "Please tell me your question, for example garbage collection days or passports.",
        "ask_report": "Please tell me what you want to report, for example a broken streetlight, a pothole "
                      "or illegal parking.",
        "ticket_keys": "You can also type the ten digits of your ticket number followed by the pound key.",
        "options": "{options}. Press the number or say your answer.",
        "option": "press {n} for {title}",
        "not_heard": "Sorry, I didn't catch that. Please say it again.",
        "transfer": "Let me connect you to an agent. Please hold.",
        "goodbye": "I haven't heard anything, so I'll end the call now. Please call again any time. Goodbye.",
        "busy": "Sorry, all our agents are busy. After the beep, please leave your message and a contact "
                "number, then press the pound key.",
        "record_hint": "Please speak after the beep and press the pound key when you are done.",
        "no_recording": "No message was recorded. Please call again later. Thank you.",
        "bye": "Thank you. Goodbye.",
        "error": "Sorry, something went wrong on our side.",
    },
}
ENGLISH_OFFER = "For English, press 9."

#: Keypad menu of the first gather: key -> (kind, text per language).
#: Kind "prompt" answers without the engine; "text" sends the text as the caller's message.
MENU: dict[str, tuple[str, dict[str, str]]] = {
    "1": ("prompt", {"ko": "ask_info", "en": "ask_info"}),
    "2": ("prompt", {"ko": "ask_report", "en": "ask_report"}),
    "3": ("text", {"ko": "민원 처리 상태 조회", "en": "/conv.request_status"}),
    "0": ("text", {"ko": "상담원 연결해 주세요", "en": "/conv.human"}),
    "9": ("text", {"ko": "English", "en": "English"}),
}

_HANGUL = re.compile("[\uac00-\ud7a3]")
_ENGLISH_SPEECH = re.compile(
    r"^\s*(english|잉글리시|잉글리쉬|영어|영어로|영어로 해 ?주세요)\s*[.!?]?\s*$", re.IGNORECASE)
_TICKET_KEYS = re.compile(r"^(20\d{2})(\d{6})$")


def speakable(text: str) -> str:
    """Chat text made fit to be read aloud: no links, bullets, brackets or quotes."""
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"\((예/아니요|예/아니오|yes/no)\)", "", text, flags=re.IGNORECASE)  # options are read out
    lines = [re.sub(r"^\s*[-•*]\s*", "", line).strip() for line in text.splitlines()]
    text = " ".join(line if line[-1] in ".?!…,:" else line + "." for line in lines if line)
    text = re.sub(r"[\[\]\"“”*_#]", " ", text)
    return re.sub(r"\s{2,}", " ", text).strip()


class _AnswerCache:
    """Rendered TwiML by delivery, so a retried gather gets exactly the same answer."""

    def __init__(self, size: int = 5000) -> None:
        self._data: OrderedDict[str, str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def _xml(resp: VoiceResponse) -> Response:
    return Response(content=str(resp), media_type="application/xml")


class TwilioVoiceChannel(ChannelAdapter):
    name = CHANNEL

    def __init__(self, inbox: ChannelPort, settings: Settings) -> None:
        super().__init__(inbox, settings)
        self.answers = _AnswerCache()
        self.voices = settings.municipality().voices
        self._hints: dict[str, str] = {}

    # --- TwiML pieces ----------------------------------------------------------------------------
    def _say(self, node: Any, text: str, lang: str | None = None) -> None:
        """``<Say>`` in the voice of the text's own language."""
        text = speakable(text)
        if not text:
            return
        lang = lang or ("ko" if _HANGUL.search(text) else "en")
        node.say(text, voice=self.voices[lang], language=LANGUAGE[lang])

    def _url(self, path: str, **query: Any) -> str:
        q = {k: v for k, v in query.items() if v not in (None, "", [])}
        base = public_url(self.settings, path)
        return f"{base}?{urlencode(q, doseq=True)}" if q else base

    def _hints_for(self, lang: str) -> str:
        """Speech hints: the catalog's service and FAQ names plus the words callers use to navigate."""
        if lang not in self._hints:
            words = list(self.inbox.vocabulary(lang))
            words += (["상담원", "상담원 연결", "접수번호", "처리 상태", "신고", "예", "아니요",
                       "취소", "영어"]
                      if lang == "ko" else ["agent", "ticket number", "status", "report", "yes", "no",
                                            "cancel", "Korean"])
            clean = []
            for w in words:
                w = re.sub(r"[(),·/]", " ", w)
                w = re.sub(r"\s{2,}", " ", w).strip()
                if w and w not in clean:
                    clean.append(w[:100])
            self._hints[lang] = ",".join(clean[:500])
        return self._hints[lang]

    def _gather(self, lang: str, n: int, *, menu: bool = False, miss: int = 0,
                options: list[str] | None = None, digits_only_one: bool = False) -> Gather:
        action = self._url(GATHER_PATH, n=n, lang=lang, menu=1 if menu else None, miss=miss or None,
                           o=options or None)
        kw: dict[str, Any] = {}
        if digits_only_one:
            kw["num_digits"] = 1
        return Gather(input="speech dtmf", language=LANGUAGE[lang], action=action, method="POST",
                      speech_timeout="auto", timeout=6, action_on_empty_result=True,
                      hints=self._hints_for(lang), **kw)

    def _dial(self, resp: VoiceResponse, department: str | None, lang: str) -> None:
        number = self.inbox.phone_of(department)
        if not number:
            self._say(resp, PROMPTS[lang]["error"], lang)
            self._record(resp, lang, PROMPTS[lang]["record_hint"])
            return
        resp.dial(number, action=self._url(DIAL_PATH, lang=lang), timeout=30)

    def _record(self, resp: VoiceResponse, lang: str, intro: str | None = None) -> None:
        if intro:
            self._say(resp, intro, lang)
        resp.record(action=self._url(RECORDING_PATH, lang=lang), method="POST", max_length=RECORD_SECONDS,
                    finish_on_key="#", play_beep=True, timeout=5)
        self._say(resp, PROMPTS[lang]["no_recording"], lang)
        resp.hangup()

    def _greeting(self) -> VoiceResponse:
        name = self.inbox.office_name("ko")
        resp = VoiceResponse()
        gather = self._gather("ko", 1, menu=True, digits_only_one=True)
        self._say(gather, PROMPTS["ko"]["greeting"].format(name=name), "ko")
        self._say(gather, ENGLISH_OFFER, "en")
        resp.append(gather)
        return resp

    def _no_input_end(self, lang: str) -> VoiceResponse:
        resp = VoiceResponse()
        if self.inbox.open_now():
            self._say(resp, PROMPTS[lang]["transfer"], lang)
            self._dial(resp, "general", lang)
        else:
            self._say(resp, PROMPTS[lang]["goodbye"], lang)
            resp.hangup()
        return resp

    def render(self, turn: Turn, lang: str, n: int) -> VoiceResponse:
        """The TwiML answer to one turn: speak, then listen, dial, record or hang up."""
        resp = VoiceResponse()
        if turn.event("language") is not None:
            lang = str(turn.event("language").data.get("lang", lang))  # type: ignore[union-attr]
        lang = lang if lang in LANGUAGE else "ko"
        action = turn.routing.action
        asks = any(r.buttons for r in turn.replies)  # e.g. an after-hours call-back offer: listen for the answer
        if action in ("handoff", "paused") and not asks:
            for reply in turn.replies:
                self._say(resp, reply.hints.get("spoken") or reply.text)
            ev = turn.event("handoff")
            after_hours = bool(ev.data.get("after_hours")) if ev is not None \
                else not self.inbox.open_now()
            if after_hours:
                self._record(resp, lang, PROMPTS[lang]["record_hint"])
            else:
                if not turn.replies:
                    self._say(resp, PROMPTS[lang]["transfer"], lang)
                self._dial(resp, turn.routing.department, lang)
            return resp
        if any(r.hints.get("record_message") for r in turn.replies):
            # The bot asks for a message (an after-hours call-back): on the phone that is a voicemail.
            for reply in turn.replies:
                self._say(resp, reply.text)
            self._record(resp, lang, PROMPTS[lang]["record_hint"])
            return resp
        if any(r.hints.get("end_call") for r in turn.replies):
            for reply in turn.replies:
                self._say(resp, reply.hints.get("spoken") or reply.text)
            resp.hangup()
            return resp
        buttons = [b for r in turn.replies for b in r.buttons]
        options = [self._option_text(b.title, b.payload, lang) for b in buttons]
        gather = self._gather(lang, n + 1, options=options,
                              digits_only_one=0 < len(buttons) <= 9)
        for reply in turn.replies:
            self._say(gather, reply.hints.get("spoken") or reply.text)
        if not turn.replies:
            self._say(gather, PROMPTS[lang]["not_heard"], lang)
        if buttons:
            listed = ", ".join(PROMPTS[lang]["option"].format(n=i, title=b.title)
                               for i, b in enumerate(buttons, 1))
            self._say(gather, PROMPTS[lang]["options"].format(options=listed), lang)
        if action == "status" and not turn.routing.ticket and not turn.event("status_lookup"):
            self._say(gather, PROMPTS[lang]["ticket_keys"], lang)
        resp.append(gather)
        return resp

    @staticmethod
    def _option_text(title: str, payload: str, lang: str) -> str:
        """What pressing an option sends. ``/intent`` payloads stay exact, except that a Korean
        call sends the (Korean) title instead: the engine would otherwise take the Latin
        payload for English and answer in English."""
        if payload.startswith("/") and lang == "ko" and _HANGUL.search(title):
            return title
        return payload

    # --- routes ----------------------------------------------------------------------------------
    def router(self) -> APIRouter:
        r = APIRouter(tags=["channels"])
        xml = {200: {"content": {"application/xml": {}}}}

        async def signed(request: Request, *required: str) -> tuple[dict[str, Any] | None, Response | None]:
            params = await form_params(request)
            denied = check_signature(self.settings, request, params)
            if denied is not None:
                return None, denied
            missing = [k for k in required if not first(params, k)]
            if missing:
                return None, JSONResponse({"detail": f"missing {', '.join(missing)}"}, status_code=400)
            return params, None

        @r.post(VOICE_PATH, summary="Twilio incoming call webhook (TwiML)", response_class=Response,
                responses=xml)
        async def call_start(request: Request) -> Response:
            params, error = await signed(request, "CallSid", "From")
            if error is not None:
                return error
            assert params is not None
            await self.inbox.reset(f"{CHANNEL}:{_sender(params)}", "ko")  # the greeting's language
            return _xml(self._greeting())

        @r.post(GATHER_PATH, summary="Twilio <Gather> result: the caller's speech or keys",
                response_class=Response, responses=xml)
        async def gathered(request: Request) -> Response:
            params, error = await signed(request, "CallSid", "From")
            if error is not None:
                return error
            assert params is not None
            q = request.query_params
            lang = q.get("lang", "ko") if q.get("lang") in LANGUAGE else "ko"
            n = _int(q.get("n"), 1)
            miss = _int(q.get("miss"), 0)
            options = q.getlist("o")
            call_sid = first(params, "CallSid")
            speech, digits = first(params, "SpeechResult"), first(params, "Digits")
            cache_key = f"{call_sid}:{n}:{speech}:{digits}"
            cached = self.answers.get(cache_key)
            if cached is not None:
                return Response(content=cached, media_type="application/xml")

            if not speech and not digits:
                if miss + 1 >= MAX_MISSES:
                    resp = self._no_input_end(lang)
                else:
                    resp = VoiceResponse()
                    gather = self._gather(lang, n + 1, menu=q.get("menu") == "1", miss=miss + 1,
                                          options=options, digits_only_one=q.get("menu") == "1")
                    self._say(gather, PROMPTS[lang]["not_heard"], lang)
                    resp.append(gather)
                return _xml(resp)

            text = speech
            if digits:
                text = digits
                index = int(digits) - 1 if digits.isdigit() and len(digits) <= 2 else -1
                if options and 0 <= index < len(options):
                    text = options[index]
                elif q.get("menu") == "1" and digits in MENU:
                    kind, value = MENU[digits]
                    if kind == "prompt":
                        resp = VoiceResponse()
                        gather = self._gather(lang, n + 1)
                        self._say(gather, PROMPTS[lang][value[lang]], lang)
                        resp.append(gather)
                        return _xml(resp)
                    text = value[lang]
                elif m := _TICKET_KEYS.match(digits):
                    text = f"{m.group(1)}-{m.group(2)}"
            elif _ENGLISH_SPEECH.match(speech):
                text = "English"

            sender = _sender(params)
            msg = Message(channel=CHANNEL, sender_id=sender, text=text, lang=lang,  # type: ignore[arg-type]
                          message_id=f"{call_sid}:{n}",
                          metadata={"call_sid": call_sid, "input": "dtmf" if digits else "speech",
                                    **({"digits": digits} if digits else {}),
                                    **({"speech_confidence": first(params, "Confidence")} if speech else {})})
            try:
                turn = await self.inbox.receive(msg)
            except Exception:  # noqa: BLE001 - the caller must never hear silence
                log.exception("voice turn failed for call %s", call_sid)
                resp = VoiceResponse()
                self._say(resp, PROMPTS[lang]["error"], lang)
                tail = self._no_input_end(lang)
                for verb in tail.verbs:
                    resp.append(verb)
                return _xml(resp)
            body = str(self.render(turn, lang, n))
            self.answers.put(cache_key, body)
            return Response(content=body, media_type="application/xml")

        @r.post(DIAL_PATH, summary="Outcome of a <Dial> to a department", response_class=Response,
                responses=xml)
        async def dialled(request: Request) -> Response:
            params, error = await signed(request, "CallSid")
            if error is not None:
                return error
            assert params is not None
            lang = request.query_params.get("lang", "ko")
            lang = lang if lang in LANGUAGE else "ko"
            resp = VoiceResponse()
            if first(params, "DialCallStatus").lower() in ("busy", "no-answer", "failed", "canceled"):
                self._record(resp, lang, PROMPTS[lang]["busy"])
            else:
                resp.hangup()
            return _xml(resp)

        @r.post(RECORDING_PATH, summary="A voicemail left after hours (or when no agent answered)",
                response_class=Response, responses=xml)
        async def recorded(request: Request) -> Response:
            params, error = await signed(request, "CallSid", "From", "RecordingUrl")
            if error is not None:
                return error
            assert params is not None
            lang = request.query_params.get("lang", "ko")
            lang = lang if lang in LANGUAGE else "ko"
            url = first(params, "RecordingUrl")
            call_sid = first(params, "CallSid")
            msg = Message(channel=CHANNEL, sender_id=_sender(params), text=f"[voicemail] {url}",
                          lang=lang,  # type: ignore[arg-type]
                          attachments=[Attachment(kind="recording", url=url)],
                          message_id=f"{call_sid}:recording",
                          metadata={"call_sid": call_sid, "recording_sid": first(params, "RecordingSid"),
                                    "duration": first(params, "RecordingDuration")})
            turn: Turn | None = None
            try:
                turn = await self.inbox.receive(msg)
            except Exception:  # noqa: BLE001 - the recording stays at Twilio; the log says which call
                log.exception("could not store voicemail of call %s", call_sid)
            resp = VoiceResponse()
            if turn is not None and turn.event("callback") is not None:
                # Added to the call-back the engine booked; said in the call's language (the
                # voicemail's text is a Latin-only URL, which the engine would answer in English).
                self._say(resp, self.inbox.say("utter_callback_message_taken", lang), lang)
            else:
                # Spoken in the call's language: the engine would take the Latin-only voicemail text
                # for English, and a hand-off in business hours has no bot reply at all.
                self._say(resp, self.inbox.say("utter_after_hours_message_taken", lang), lang)
            self._say(resp, PROMPTS[lang]["bye"], lang)
            resp.hangup()
            return _xml(resp)

        @r.post(STATUS_PATH, summary="Twilio call status callback")
        async def call_status(request: Request) -> Response:
            params, error = await signed(request, "CallSid", "CallStatus")
            if error is not None:
                return error
            assert params is not None
            sender = _sender(params)
            if not sender.startswith(ANONYMOUS_PREFIX):  # nobody to file it under
                try:
                    await self.inbox.note(CallStatus(CHANNEL, sender, first(params, "CallSid"),
                                                     first(params, "CallStatus").lower(),
                                                     first(params, "CallDuration")))
                except Exception:  # noqa: BLE001 - a lost status is not worth a Twilio error
                    log.exception("could not store the status of call %s", first(params, "CallSid"))
            return Response(status_code=204)

        return r


def _int(value: str | None, default: int) -> int:
    try:
        return max(0, int(value)) if value is not None else default
    except ValueError:
        return default


def _sender(params: dict[str, Any]) -> str:
    """The caller in E.164, or ``anonymous:<CallSid>`` for a withheld number."""
    try:
        return normalize_phone(first(params, "From"))
    except ValueError:
        return f"{ANONYMOUS_PREFIX}{first(params, 'CallSid')}"
