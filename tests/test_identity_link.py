"""One resident across channels: web chat proves a phone number with a code sent by SMS."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from bot.webchat_keys import new_key, session_of
from crm_store.models import ChannelIdentity, Interaction, OtpCode, Resident
from tests.twilio_helpers import FakeTwilioApi, TwilioApp, sid

KEY = new_key()
SESSION = session_of(KEY)
PHONE = "010-2345-6789"


@pytest.fixture
def twilio_app(tmp_path):
    api = FakeTwilioApi().start()
    app = TwilioApp(tmp_path, api_url=api.url)
    yield app, api
    app.close()
    api.stop()


def test_webchat_links_to_sms_resident_with_one_time_code(twilio_app):
    app, api = twilio_app
    # The resident texted before: an SMS resident exists for the number.
    app.post("/webhooks/twilio/sms", {"From": "+821023456789", "To": "+15005550006", "Body": "안녕하세요",
                                      "MessageSid": sid("SM"), "AccountSid": "AC" + "0" * 32})
    # Now on web chat: a REST-like turn creates the web-chat identity.
    r = app.http.post("/webhooks/rest/webhook", json={"sender": "x", "message": "hi"})
    assert r.status_code == 200
    r = app.http.post("/api/identity/otp", json={"channel": "webchat", "sender_key": KEY, "phone": PHONE})
    assert r.status_code == 200 and r.json() == {"sent": True}
    sms = api.requests[-1]["form"]
    assert sms["To"] == "+821023456789"
    code = re.search(r"\d{6}", sms["Body"]).group(0)

    wrong = "000000" if code != "000000" else "111111"
    bad = app.http.post("/api/identity/otp/verify", json={"channel": "webchat", "sender_key": KEY,
                                                          "phone": PHONE, "code": wrong})
    assert bad.status_code == 400
    ok = app.http.post("/api/identity/otp/verify", json={"channel": "webchat", "sender_key": KEY,
                                                         "phone": PHONE, "code": code})
    assert ok.status_code == 200 and ok.json() == {"linked": True}
    with app.sessions() as s:
        owners = {i.channel: i.resident_id for i in s.scalars(select(ChannelIdentity))}
        assert owners["webchat"] == owners["twilio_sms"]
        assert s.scalars(select(ChannelIdentity.external_id).where(ChannelIdentity.channel == "webchat")).one() \
            == SESSION


@pytest.mark.parametrize("payload", [
    {"channel": "telegram", "sender_key": KEY, "phone": PHONE},   # not a linkable channel
    {"channel": "webchat", "sender_key": KEY, "phone": "hello"},  # not a phone number
    {"channel": "webchat", "sender_key": "short", "phone": PHONE},
    {"channel": "webchat", "sender_id": SESSION, "phone": PHONE},  # a session id is no proof
])
def test_bad_otp_requests_get_422(twilio_app, payload):
    app, _ = twilio_app
    assert app.http.post("/api/identity/otp", json=payload).status_code == 422


def test_resident_sees_then_deletes_own_data(twilio_app):
    app, _ = twilio_app
    say = lambda text: app.http.post("/webhooks/rest/webhook", json={"sender": "erin", "message": text}).json()  # noqa: E731
    say("쓰레기 언제 버려요?")
    shown = say("내 정보 보기")
    text = shown[-1]["text"]
    assert "웹 API" in text and "rest" not in text  # the channel by its name, never the internal code
    assert "대화 3건" in text  # 2 before, plus this one
    say("내 정보 삭제해 주세요")
    done = say("예")
    assert done[0]["text"] == app.engine.knowledge.render("utter_data_deleted", "ko")
    with app.sessions() as s:
        texts = [t for (t,) in s.execute(select(Interaction.text).where(Interaction.direction == "in"))]
        assert "쓰레기 언제 버려요?" not in texts
        assert s.scalar(select(func.count()).select_from(Resident).where(Resident.deleted_at.is_not(None))) >= 1


def test_phone_link_by_conversation_works_on_any_channel(twilio_app):
    """"전화번호 연결" in the chat itself: the code goes out by SMS, the resident types it back."""
    app, api = twilio_app
    app.post("/webhooks/twilio/sms", {"From": "+821098765432", "To": "+15005550006", "Body": "가로등 고장이요",
                                      "MessageSid": sid("SM"), "AccountSid": "AC" + "0" * 32})
    say = lambda text: app.http.post("/webhooks/rest/webhook", json={"sender": "kim-web", "message": text}).json()  # noqa: E731
    assert "번호" in say("전화번호 연결하고 싶어요")[-1]["text"]
    sent = say("010-9876-5432")[-1]["text"]
    assert "****" in sent and "5432" in sent  # the number is shown masked
    code = re.search(r"\d{6}", api.requests[-1]["form"]["Body"]).group(0)
    assert say(code)[-1]["text"] == app.engine.knowledge.render("utter_phone_linked", "ko")
    with app.sessions() as s:
        owners = {i.channel: i.resident_id for i in s.scalars(select(ChannelIdentity))}
    assert owners["rest"] == owners["twilio_sms"]


def test_wrong_code_is_refused(twilio_app):
    app, api = twilio_app
    say = lambda text: app.http.post("/webhooks/rest/webhook", json={"sender": "lee-web", "message": text}).json()  # noqa: E731
    say("휴대폰 번호 인증 010-1111-2222")
    code = re.search(r"\d{6}", api.requests[-1]["form"]["Body"]).group(0)
    wrong = "123456" if code != "123456" else "654321"
    assert say(wrong)[-1]["text"] == app.engine.knowledge.render("utter_otp_failed", "ko")


def _code(api) -> str:
    return re.search(r"\d{6}", api.requests[-1]["form"]["Body"]).group(0)


def test_wrong_codes_are_counted_and_the_sixth_try_gets_429_even_with_the_right_code(twilio_app):
    """The rollback of the old 400 undid ``attempts += 1``: codes could be guessed without limit."""
    app, api = twilio_app
    key = new_key()
    assert app.http.post("/api/identity/otp", json={"channel": "webchat", "sender_key": key,
                                                    "phone": PHONE}).status_code == 200
    code = _code(api)
    wrong = [c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c != code][:5]
    body = {"channel": "webchat", "sender_key": key, "phone": PHONE}
    for c in wrong:
        assert app.http.post("/api/identity/otp/verify", json={**body, "code": c}).status_code == 400
    with app.sessions() as s:
        ident = f"webchat:{session_of(key)}"
        assert s.scalars(select(OtpCode.attempts).where(OtpCode.identity_key == ident)).one() == 5
    for c in (wrong[0], code):
        locked = app.http.post("/api/identity/otp/verify", json={**body, "code": c})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    with app.sessions() as s:
        assert s.scalars(select(ChannelIdentity).where(ChannelIdentity.channel == "webchat")).first() is None


def test_issuing_codes_is_limited_per_number(twilio_app):
    """60 codes to one number in 2.7 s was SMS bombing; now the fourth in ten minutes is refused."""
    app, api = twilio_app
    answers = [app.http.post("/api/identity/otp", json={"channel": "webchat", "sender_key": new_key(),
                                                        "phone": "010-5555-0000"}) for _ in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert sum(r["form"]["To"] == "+821055550000" for r in api.requests) == 3


def test_kakao_identities_cannot_be_linked_through_the_api(twilio_app):
    """Anyone who knew a Kakao user id could merge it into their own number."""
    app, api = twilio_app
    r = app.http.post("/api/identity/otp", json={"channel": "kakao", "sender_key": new_key(), "phone": PHONE})
    assert r.status_code == 403
    assert not api.requests

