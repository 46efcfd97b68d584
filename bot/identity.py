"""Linking a web-chat or Kakao identity to the resident's phone number with a one-time code.

Voice and SMS carry the phone number and Telegram shares a contact; web chat and
Kakao prove the number instead: we text a 6-digit code, the resident types it
back, and the identity joins the resident of that number (history merged).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from crm_store import otp, residents
from crm_store.phones import normalize_phone

router = APIRouter(prefix="/api/identity", tags=["identity"])

LinkableChannel = Literal["webchat", "kakao"]


class OtpStart(BaseModel):
    channel: LinkableChannel
    sender_id: str = Field(min_length=8, max_length=128)
    phone: str = Field(min_length=6, max_length=32, description="Korean or E.164 phone number")
    lang: Literal["ko", "en"] = "ko"


class OtpVerify(BaseModel):
    channel: LinkableChannel
    sender_id: str = Field(min_length=8, max_length=128)
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


@router.post("/otp", response_model=OtpStarted, summary="Text a one-time code to a phone number")
async def start(body: OtpStart, request: Request) -> OtpStarted:
    phone = _phone(body.phone)
    key = f"{body.channel}:{body.sender_id}"
    with request.app.state.sessions.begin() as s:
        code = otp.issue(s, key, phone, secret=request.app.state.settings.pcrm_secret_key)
    city = request.app.state.engine.knowledge.config.get("municipality", {}).get("name", {})
    if body.lang == "en":
        text = f"[{city.get('en', 'City')}] Your code is {code}. It expires in 5 minutes."
    else:
        text = f"[{city.get('ko', '구청')}] 인증번호 {code} (5분 안에 입력해 주세요)"
    sent = await request.app.state.sms_sender.send_sms(phone, text)
    return OtpStarted(sent=bool(sent))


@router.post("/otp/verify", response_model=OtpVerified, summary="Confirm the code and link the identity",
             responses={400: {"description": "wrong or expired code"}})
def verify(body: OtpVerify, request: Request) -> OtpVerified:
    phone = _phone(body.phone)
    key = f"{body.channel}:{body.sender_id}"
    with request.app.state.sessions.begin() as s:
        if not otp.verify(s, key, phone, body.code, secret=request.app.state.settings.pcrm_secret_key):
            raise HTTPException(status_code=400, detail="wrong or expired code")
        residents.link_phone(s, body.channel, body.sender_id, phone)
    return OtpVerified(linked=True)
