"""Twilio SMS channel end to end: the real app under uvicorn, requests signed as Twilio signs
them, the real NLU model, a real SQLite store, and the real twilio REST client talking to a
local fake of Twilio's Messages API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.messages import Button, Reply
from channels.twilio_sms import SMS_LIMIT, keyword_of, render_sms
from crm_store.models import AuditLog, ChannelIdentity, Interaction, Resident, ServiceRequest
from tests.twilio_helpers import ACCOUNT_SID, FROM_NUMBER, FakeTwilioApi, TwilioApp, sid, xml_root

TICKET = re.compile(r"(?<!\d)20\d{2}-\d{6}(?!\d)")


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeTwilioApi]:
    api = FakeTwilioApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_api: FakeTwilioApi) -> Iterator[TwilioApp]:
    app = TwilioApp(tmp_path_factory.mktemp("twilio-sms"), api_url=fake_api.url)
    yield app
    app.close()


def sms(server: TwilioApp, sender: str, body: str, message_sid: str | None = None, **kw: Any) -> Any:
    params = {"From": sender, "To": FROM_NUMBER, "Body": body, "MessageSid": message_sid or sid("SM"),
              "AccountSid": ACCOUNT_SID, "NumMedia": "0"}
    return server.post("/webhooks/twilio/sms", params, **kw)


def messages(response: Any) -> list[str]:
    root = xml_root(response)
    assert all(child.tag == "Message" for child in root), response.text
    return [m.text or "" for m in root]


def count(server: TwilioApp, model: Any, *where: Any) -> int:
    with server.sessions() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0


# --- inbound -----------------------------------------------------------------------------------

def test_streetlight_report_continues_with_the_location_question(server: TwilioApp) -> None:
    texts = messages(sms(server, "+821011110001", "가로등이 나갔어요"))
    assert texts, "no <Message> in the answer"
    joined = " ".join(texts)
    assert "가로등" in joined and "위치" in joined
    assert len(texts) <= 3 and all(len(t) <= SMS_LIMIT for t in texts)


def test_unsigned_and_forged_requests_are_refused(server: TwilioApp) -> None:
    unsigned = sms(server, "+821011110002", "가로등이 나갔어요", sign=False)
    assert unsigned.status_code == 403
    assert "signature" in unsigned.json()["detail"].lower()
    forged = sms(server, "+821011110002", "가로등이 나갔어요", token="not-the-real-token")
    assert forged.status_code == 403
    assert "invalid" in forged.json()["detail"].lower()
    # A genuine signature over other parameters (a tampered body) is a forgery too.
    params = {"From": "+821011110002", "Body": "안녕하세요", "MessageSid": sid("SM")}
    good = server.signature("/webhooks/twilio/sms", params)
    tampered = server.post("/webhooks/twilio/sms", {**params, "Body": "내 정보 삭제해 주세요"}, signature=good)
    assert tampered.status_code == 403
    assert count(server, Interaction, Interaction.channel == "twilio_sms",
                 Interaction.message_id == params["MessageSid"]) == 0


def test_missing_fields_are_a_bad_request(server: TwilioApp) -> None:
    for missing in ("From", "Body", "MessageSid"):
        params = {"From": "+821011110003", "Body": "안녕", "MessageSid": sid("SM")}
        del params[missing]
        r = server.post("/webhooks/twilio/sms", params)
        assert r.status_code == 400, (missing, r.text)
        assert missing in r.json()["detail"]


def test_whole_form_by_sms_ends_with_a_ticket_and_digits_pick_buttons(server: TwilioApp) -> None:
    sender = "+821011110004"
    first = " ".join(messages(sms(server, sender, "가로등이 나갔어요")))
    assert "위치" in first
    consent = messages(sms(server, sender, "한빛동 중앙로 12 앞이에요"))
    joined = "\n".join(consent)
    assert "1. 예" in joined and "2. 아니요" in joined, joined
    # "1" picks the first button: the engine receives its payload, which is what is stored.
    one_sid = sid("SM")
    confirm = "\n".join(messages(sms(server, sender, "1", one_sid)))
    with server.sessions() as s:
        stored = s.scalars(select(Interaction.text).where(Interaction.message_id == one_sid)).one()
    assert stored == "예"
    assert "한빛동 중앙로 12" in confirm and "1. 예" in confirm, confirm
    opened = " ".join(messages(sms(server, sender, "1")))
    ticket = TICKET.search(opened)
    assert ticket, opened
    with server.sessions() as s:
        row = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket.group(0))).one()
        assert row.service_code == "roads.streetlight"
        assert row.channel == "twilio_sms"
        assert row.consent is True
        assert "중앙로 12" in (row.address_string or "")


def test_duplicate_message_sid_is_recorded_once_and_answered_the_same(server: TwilioApp) -> None:
    sender, message_sid = "+821011110005", sid("SM")
    first = sms(server, sender, "쓰레기 언제 버려요", message_sid)
    before = count(server, Interaction, Interaction.channel == "twilio_sms")
    again = sms(server, sender, "쓰레기 언제 버려요", message_sid)
    assert again.text == first.text
    assert messages(first)
    assert count(server, Interaction, Interaction.channel == "twilio_sms") == before
    assert count(server, Interaction, Interaction.message_id == message_sid) == 1


def test_long_replies_are_split_at_sentences_with_a_link_when_cut() -> None:
    sentence = "이 문장은 문자 메시지를 나누는 시험을 위해 일부러 길게 쓴 문장이에요."
    parts, _ = render_sms([Reply(" ".join([sentence] * 4))], "https://pcrm.example/")
    assert 1 < len(parts) <= 3 and all(len(p) <= SMS_LIMIT for p in parts)
    assert all(p.endswith("요.") for p in parts), parts  # cut between sentences, not inside
    yes_no = [Button("예", "예"), Button("아니요", "아니요")]
    long_parts, _ = render_sms([Reply(" ".join([sentence] * 30), buttons=yes_no)], "https://pcrm.example/")
    assert len(long_parts) == 3 and all(len(p) <= SMS_LIMIT for p in long_parts)
    assert "https://pcrm.example/" in long_parts[-1]
    assert long_parts[-1].rstrip().endswith("2. 아니요"), long_parts  # options are never cut


# --- opt-out and outbound ----------------------------------------------------------------------

def test_keywords() -> None:
    assert keyword_of("STOP") == keyword_of("stop.") == keyword_of("수신거부") == "stop"
    assert keyword_of("START") == keyword_of("수신 동의") == "start"
    assert keyword_of("HELP") == keyword_of("도움말") == "help"
    assert keyword_of("가로등이 나갔어요") is None
    assert keyword_of("cancel") is None  # means "cancel the report" inside a form
    assert keyword_of("anything", "STOP") == "stop"  # Twilio Advanced Opt-Out


def test_outbound_sms_goes_through_the_real_client_to_the_api(server: TwilioApp, fake_api: FakeTwilioApi) -> None:
    fake_api.requests.clear()
    sender = "+821011110006"
    messages(sms(server, sender, "안녕하세요"))
    ok = server.call(server.channel("twilio_sms").send(sender, [Reply("담당자 답변: 가로등은 내일 고쳐요.")]))
    assert ok is True
    assert len(fake_api.requests) == 1
    req = fake_api.requests[0]
    assert req["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert req["auth"][0] == ACCOUNT_SID
    form = req["form"]
    assert form["To"] == sender
    assert form["From"] == FROM_NUMBER
    assert form["Body"] == "담당자 답변: 가로등은 내일 고쳐요."
    assert form["StatusCallback"] == server.url + "/webhooks/twilio/sms/status"
    # One-time codes for phone verification use the same sender.
    sender_obj = server.channel("twilio_sms").sender
    assert server.call(sender_obj.send_sms("010-1111-0006", "[한빛구청] 인증번호 123456")) is True
    assert fake_api.requests[-1]["form"]["To"] == sender
    assert fake_api.requests[-1]["form"]["Body"] == "[한빛구청] 인증번호 123456"


def test_stop_means_no_outbound_sms_until_start(server: TwilioApp, fake_api: FakeTwilioApi) -> None:
    sender = "+821011110007"
    adapter = server.channel("twilio_sms")
    messages(sms(server, sender, "여권 발급 어떻게 해요"))
    stop_sid = sid("SM")
    answer = " ".join(messages(sms(server, sender, "STOP", stop_sid)))
    assert answer == server.engine.knowledge.render("utter_opt_out_done", "en")
    with server.sessions() as s:
        resident_id = s.scalars(select(ChannelIdentity.resident_id).where(
            ChannelIdentity.channel == "twilio_sms", ChannelIdentity.external_id == sender)).one()
        assert s.get(Resident, resident_id).sms_opt_out is True
        row = s.scalars(select(Interaction).where(Interaction.message_id == stop_sid)).one()
        assert row.handled_by == "system" and row.label == "sms.stop"
        assert s.scalars(select(AuditLog).where(AuditLog.action == "sms.opt_out",
                                                AuditLog.target == f"resident:{resident_id}")).first()
    fake_api.requests.clear()
    assert server.call(adapter.send(sender, [Reply("민원 처리 결과 안내")])) is False
    assert server.call(adapter.sender.send_sms(sender, "인증번호 000000")) is False
    assert fake_api.requests == []
    # Korean keywords answer in Korean; START lifts the opt-out.
    back = " ".join(messages(sms(server, sender, "수신동의")))
    assert back == server.engine.knowledge.render("utter_opt_in_done", "ko")
    assert server.call(adapter.send(sender, [Reply("민원 처리 결과 안내")])) is True
    assert [r["form"]["To"] for r in fake_api.requests] == [sender]
    helped = " ".join(messages(sms(server, sender, "도움말")))
    assert helped.startswith(server.engine.knowledge.render("utter_help", "ko")[:30])


def test_delivery_status_is_recorded_and_unsubscribed_numbers_are_opted_out(server: TwilioApp) -> None:
    sender = "+821011110008"
    messages(sms(server, sender, "안녕하세요"))
    message_sid = sid("SM")
    path = "/webhooks/twilio/sms/status"
    params = {"MessageSid": message_sid, "MessageStatus": "delivered", "To": sender, "From": FROM_NUMBER}
    assert server.post(path, params, sign=False).status_code == 403
    assert server.post(path, params).status_code == 204
    assert server.post(path, params).status_code == 204  # a retry is not a second row
    assert count(server, AuditLog, AuditLog.action == "sms.status.delivered",
                 AuditLog.target == f"sms:{message_sid}") == 1
    failed = {**params, "MessageSid": sid("SM"), "MessageStatus": "undelivered", "ErrorCode": "21610"}
    assert server.post(path, failed).status_code == 204
    assert server.channel("twilio_sms").sender.blocked(sender) is True
