"""Human words for the codes the console would otherwise show (``callback:asked_for_person``,
``faq.vaccination``, ``twilio_sms``, ``en``): agents read Korean labels, never internal codes."""

from __future__ import annotations

from typing import Any

REASONS = {
    "asked_for_person": "주민이 상담원 연결 요청",
    "clarify_failed": "챗봇이 이해하지 못함",
    "emergency": "긴급 상황",
    "low_confidence": "챗봇이 이해하지 못함",
    "queue_wait": "대기가 길어 회신 요청",
}
CHANNELS = {
    "webchat": "웹 채팅", "rest": "API", "telegram": "텔레그램", "kakao": "카카오톡",
    "twilio_sms": "문자(SMS)", "twilio_voice": "전화", "voice": "전화", "sms": "문자(SMS)", "phone": "전화번호",
}
LANGS = {"ko": "한국어", "en": "영어", "zh": "중국어", "vi": "베트남어", "ja": "일본어"}
OUTCOMES = {"reached": "통화 완료", "no_answer": "받지 않음", "retry": "다시 걸기"}


def reason(code: str | None, knowledge: Any = None) -> str:
    """``callback:asked_for_person`` → "회신 요청 · 주민이 상담원 연결 요청"."""
    code = code or ""
    if code.startswith("callback:"):
        return "회신 요청 · " + reason(code.split(":", 1)[1], knowledge)
    if code in REASONS:
        return REASONS[code]
    if knowledge is not None and code:
        name = knowledge.label_name(code, "ko")
        if name != code:
            return name
    return code or "-"


def label(code: str | None, knowledge: Any) -> str | None:
    """An NLU label's Korean name (None when there is no label or no name for it)."""
    if not code:
        return None
    name = knowledge.label_name(code, "ko")
    return name if name != code else None


def channel(code: str | None) -> str:
    return CHANNELS.get(code or "", code or "-")


def lang(code: str | None) -> str:
    return LANGS.get(code or "", code or "-")
