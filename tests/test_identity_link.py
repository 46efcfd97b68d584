"""One resident across channels: web chat proves a phone number with a code sent by SMS."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from crm_store.models import ChannelIdentity, Interaction, Resident
from tests.twilio_helpers import FakeTwilioApi, TwilioApp, sid

SESSION = "websession-123456"
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
    r = app.http.post("/api/identity/otp", json={"channel": "webchat", "sender_id": SESSION, "phone": PHONE})
    assert r.status_code == 200 and r.json() == {"sent": True}
    sms = api.requests[-1]["form"]
    assert sms["To"] == "+821023456789"
    code = re.search(r"\d{6}", sms["Body"]).group(0)

    wrong = "000000" if code != "000000" else "111111"
    bad = app.http.post("/api/identity/otp/verify", json={"channel": "webchat", "sender_id": SESSION,
                                                          "phone": PHONE, "code": wrong})
    assert bad.status_code == 400
    ok = app.http.post("/api/identity/otp/verify", json={"channel": "webchat", "sender_id": SESSION,
                                                         "phone": PHONE, "code": code})
    assert ok.status_code == 200 and ok.json() == {"linked": True}
    with app.sessions() as s:
        owners = {i.channel: i.resident_id for i in s.scalars(select(ChannelIdentity))}
        assert owners["webchat"] == owners["twilio_sms"]


@pytest.mark.parametrize("payload", [
    {"channel": "telegram", "sender_id": SESSION, "phone": PHONE},   # not a linkable channel
    {"channel": "webchat", "sender_id": SESSION, "phone": "hello"},  # not a phone number
    {"channel": "webchat", "sender_id": "short", "phone": PHONE},
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
