"""Linking a web-chat identity to the resident's phone number with a one-time code.

Voice and SMS carry the phone number and Telegram shares a contact; web chat proves the number
instead: we text a 6-digit code, the resident types it back, and the identity joins the resident
of that number (history merged).

Who may link what:

* **web chat**: the caller must hold the conversation, i.e. send the widget's session key
  (``sender_key``, see :mod:`bot.webchat_keys`); the session id is derived from it, so knowing
  someone's session id is not enough to merge their conversation into your number.
* **KakaoTalk**: Kakao's skill requests carry no secret the resident holds, so a Kakao identity
  is linked only inside the Kakao conversation itself ("전화번호 연결"); this API answers 403.

Limits (:mod:`bot.throttle`): codes per number, per identity and per client address; a code
dies after 5 wrong tries and every further check answers 429 with ``Retry-After``. Attempts are
committed before the answer, whatever it is.
"""

from __future__ import annotations

import math
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from bot import throttle
from bot.phones import normalize_phone
from bot.ratelimit import RateLimited
from bot.webchat_keys import session_of
from crm_store import otp, residents
from crm_store.timeutil import as_utc, utcnow

router = APIRouter(prefix="/api/identity", tags=["identity"])

LinkableChannel = Literal["webchat", "kakao"]


class OtpStart(BaseModel):
    channel: LinkableChannel
    sender_key: str = Field(min_length=22, max_length=86, pattern=r"^[A-Za-z0-9_-]+$",
                            description="The web-chat session key the widget keeps (proves the conversation)")
    phone: str = Field(min_length=6, max_length=32, description="Korean or E.164 phone number")
    lang: Literal["ko", "en"] = "ko"


class OtpVerify(BaseModel):
    channel: LinkableChannel
    sender_key: str = Field(min_length=22, max_length=86, pattern=r"^[A-Za-z0-9_-]+$")
    phone: str = Field(min_length=6, max_length=32)
    code: str = Field(pattern=r"^\d{6}$")


class OtpStarted(BaseModel):
    sent: bool


class OtpVerified(BaseModel):
    linked: bool


def _phone(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail="not a valid phone number") from exc


def _sender(channel: str, sender_key: str) -> str:
    if channel != "webchat":
        raise HTTPException(status_code=403, detail="link a KakaoTalk identity inside the KakaoTalk "
                                                    "conversation (\"전화번호 연결\")")
    try:
        return session_of(sender_key)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail="sender_key is not a web-chat key") from exc


def _too_many(retry_after: int) -> HTTPException:
    return HTTPException(status_code=429, detail="too many attempts; please try again later",
                         headers={"Retry-After": str(max(1, retry_after))})


@router.post("/otp", response_model=OtpStarted, summary="Text a one-time code to a phone number",
             responses={403: {"description": "not linkable here"}, 429: {"description": "too many codes"}})
async def start(body: OtpStart, request: Request) -> OtpStarted:
    phone = _phone(body.phone)
    sender_id = _sender(body.channel, body.sender_key)
    key = f"{body.channel}:{sender_id}"
    try:
        throttle.otp_issue(throttle.limiter(request.app), key, phone, throttle.client_ip(request))
    except RateLimited as exc:
        raise _too_many(exc.retry_after) from exc
    with request.app.state.sessions.begin() as s:
        code = otp.issue(s, key, phone, secret=request.app.state.settings.pcrm_secret_key)
    city = request.app.state.engine.knowledge.municipality.municipality.name
    if body.lang == "en":
        text = f"[{city.get('en', 'City')}] Your code is {code}. It expires in 5 minutes."
    else:
        text = f"[{city.get('ko', '구청')}] 인증번호 {code} (5분 안에 입력해 주세요)"
    sent = await request.app.state.sms_sender.send_sms(phone, text)
    return OtpStarted(sent=bool(sent))


@router.post("/otp/verify", response_model=OtpVerified, summary="Confirm the code and link the identity",
             responses={400: {"description": "wrong or expired code"}, 403: {"description": "not linkable here"},
                        429: {"description": "too many wrong codes"}})
def verify(body: OtpVerify, request: Request) -> OtpVerified:
    phone = _phone(body.phone)
    sender_id = _sender(body.channel, body.sender_key)
    key = f"{body.channel}:{sender_id}"
    try:
        throttle.hit_all(throttle.limiter(request.app), f"otp-verify-client:{throttle.client_ip(request)}",
                         throttle.OTP_VERIFY_PER_CLIENT)
    except RateLimited as exc:
        raise _too_many(exc.retry_after) from exc
    # The attempt is committed when this block ends normally, whatever the outcome.
    with request.app.state.sessions.begin() as s:
        outcome, until = otp.check(s, key, phone, body.code, secret=request.app.state.settings.pcrm_secret_key)
        if outcome == "ok":
            residents.link_phone(s, body.channel, sender_id, phone)
    if outcome == "locked":
        wait = (as_utc(until) - utcnow()).total_seconds() if until is not None else 60
        raise _too_many(math.ceil(wait))
    if outcome != "ok":
        raise HTTPException(status_code=400, detail="wrong or expired code")
    return OtpVerified(linked=True)
