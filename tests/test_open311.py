"""Open311 GeoReport v2 against the real app over HTTP (raw requests and a third-party client).

The third-party client is ``georeport`` from PyPI (it only reads: it has no POST); the older
``open311`` package is Python 2 only and does not import on Python 3.11.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.settings import ROOT

TICKET = re.compile(r"^\d{4}-\d{6}$")
KEY = "test-open311-key"
CATALOG = yaml.safe_load((ROOT / "nlu_data" / "catalog.yml").read_text(encoding="utf-8"))
CONFIG = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
SERVICES = {s["code"]: s for s in CATALOG["services"]}


@pytest.fixture
def api(live_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> httpx.Client:
    monkeypatch.setenv("OPEN311_API_KEYS", f"other-key, {KEY}")
    monkeypatch.setenv("OPEN311_KEYS_FILE", str(tmp_path / "keys.json"))
    with httpx.Client(base_url=f"{live_server}/open311/v2", timeout=30) as client:
        yield client


def _post(api: httpx.Client, fmt: str = "json", **fields: Any) -> httpx.Response:
    data = {"api_key": KEY, "service_code": "roads.pothole", "address_string": "한빛동 중앙로 12",
            "description": "도로에 큰 구멍이 있어요"}
    data.update(fields)
    return api.post(f"/requests.{fmt}", data={k: v for k, v in data.items() if v is not None})


def _create(api: httpx.Client, **fields: Any) -> str:
    r = _post(api, **fields)
    assert r.status_code == 201, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["account_id"] is None and body[0]["service_notice"]
    assert TICKET.match(body[0]["service_request_id"])
    return body[0]["service_request_id"]


def _is_error_list(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, list) and body and body[0]["code"] == status and body[0]["description"]


def test_services_json_lists_every_catalog_code(api: httpx.Client) -> None:
    r = api.get("/services.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    services = r.json()
    assert {s["service_code"] for s in services} == set(SERVICES)
    assert len(services) == 11
    for s in services:
        cat = SERVICES[s["service_code"]]
        assert s["service_name"] == cat["ko"]
        assert s["group"] == cat["department"]
        assert s["type"] == "realtime"
        assert s["metadata"] in (True, False)
        assert s["description"] and isinstance(s["keywords"], str)
    en = {s["service_code"]: s["service_name"] for s in api.get("/services.json?lang=en").json()}
    assert en == {code: cat["en"] for code, cat in SERVICES.items()}


def test_services_xml_parses(api: httpx.Client) -> None:
    r = api.get("/services.xml")
    assert r.status_code == 200 and "xml" in r.headers["content-type"]
    root = ET.fromstring(r.content)
    assert root.tag == "services"
    codes = {s.findtext("service_code") for s in root.findall("service")}
    assert codes == set(SERVICES)
    pothole = next(s for s in root.findall("service") if s.findtext("service_code") == "roads.pothole")
    assert pothole.findtext("service_name") == "도로 파손(포트홀) 신고"
    assert pothole.findtext("group") == "roads" and pothole.findtext("metadata") in ("true", "false")


def test_service_definition(api: httpx.Client) -> None:
    r = api.get("/services/waste.missed_collection.json")
    assert r.status_code == 200
    body = r.json()
    assert body["service_code"] == "waste.missed_collection"
    codes = [a["code"] for a in body["attributes"]]
    assert codes == ["location", "description", "when"]  # the config's slots, consent left out
    assert [a["order"] for a in body["attributes"]] == [1, 2, 3]
    root = ET.fromstring(api.get("/services/roads.pothole.xml").content)
    assert root.tag == "service_definition"
    assert [a.findtext("code") for a in root.find("attributes")] == ["location", "description"]

    _is_error_list(api.get("/services/no.such_service.json"), 404)
    err = api.get("/services/no.such_service.xml")
    assert err.status_code == 404
    root = ET.fromstring(err.content)
    assert root.tag == "errors" and root.find("error").findtext("code") == "404"
    assert api.get("/services/roads.pothole.html").status_code == 404


def test_post_requires_a_valid_key(api: httpx.Client) -> None:
    _is_error_list(_post(api, api_key=None), 403)
    _is_error_list(_post(api, api_key="wrong"), 403)
    r = _post(api, "xml", api_key=None)
    assert r.status_code == 403
    root = ET.fromstring(r.content)
    assert root.tag == "errors" and root.find("error").findtext("code") == "403"


def test_post_creates_request_through_the_bots_store(api: httpx.Client, live_server_handle: Any) -> None:
    ticket = _create(api, service_code="water.leak", lat="37.5665", long="126.9780", address_string=None,
                     description="수도관에서 물이 새요 010-1234-5678", **{"attribute[when]": "어제부터"})
    rec = live_server_handle.app.state.engine.requests.get(ticket)
    assert rec is not None and rec.department == "water"
    r = api.get(f"/requests/{ticket}.json", headers={"X-API-Key": KEY})  # a city system: the full record
    assert r.status_code == 200
    [req] = r.json()
    assert req["service_request_id"] == ticket
    assert req["agency_responsible"] == "water"
    assert req["service_code"] == "water.leak" and req["service_name"] == "누수 신고"
    assert req["status"] == "open"
    assert req["lat"] == pytest.approx(37.5665) and req["long"] == pytest.approx(126.978)
    assert "5678" in req["description"] and "1234" not in req["description"]  # phone masked
    for field in ("requested_datetime", "updated_datetime", "expected_datetime"):
        assert req[field].endswith("+09:00"), req[field]
    expected = datetime.fromisoformat(req["expected_datetime"]) - datetime.fromisoformat(req["requested_datetime"])
    assert expected == timedelta(hours=CONFIG["services"]["water.leak"]["expected_hours"])
    assert req["service_notice"]

    root = ET.fromstring(api.get(f"/requests/{ticket}.xml").content)
    assert root.tag == "service_requests"
    assert root.find("request").findtext("agency_responsible") == "water"

    tok = api.get(f"/tokens/{ticket}.json")
    assert tok.status_code == 200 and tok.json() == [{"service_request_id": ticket, "token": ticket}]


def test_post_json_body_and_xml_response(api: httpx.Client) -> None:
    r = api.post("/requests.xml", json={"api_key": KEY, "service_code": "parks.tree_hazard",
                                        "address_string": "한빛공원 정문", "description": "나무가 쓰러질 것 같아요"})
    assert r.status_code == 201, r.text
    root = ET.fromstring(r.content)
    ticket = root.find("request").findtext("service_request_id")
    assert TICKET.match(ticket)
    [req] = api.get(f"/requests/{ticket}.json", headers={"X-API-Key": KEY}).json()
    assert req["agency_responsible"] == "parks" and req["address"] == "한빛공원 정문"


def test_post_validation(api: httpx.Client) -> None:
    _is_error_list(_post(api, address_string=None), 400)  # no location at all
    _is_error_list(_post(api, address_string=None, lat="37.5"), 400)  # lat without long
    _is_error_list(_post(api, lat="abc", long="126.9"), 400)
    _is_error_list(_post(api, lat="nan", long="126.9"), 400)
    _is_error_list(_post(api, lat="91", long="126.9"), 400)
    _is_error_list(_post(api, service_code=None), 400)
    _is_error_list(_post(api, service_code="no.such"), 404)
    _is_error_list(_post(api, media_url="javascript:alert(1)"), 400)
    _is_error_list(_post(api, description="가" * 5000), 400)
    r = api.post("/requests.json", content=b"{not json", headers={"content-type": "application/json"})
    _is_error_list(r, 400)
    r = api.post("/requests.json", content=b"[1,2]", headers={"content-type": "application/json"})
    _is_error_list(r, 400)


@pytest.mark.parametrize("query", [
    "start_date=yesterday", "end_date=2026-13-45", "start_date=2026-01-01T25:00:00Z",
    "end_date=0001-01-01", "start_date=9999-12-31T23:59:59", "start_date=2026-01-01&end_date=2025-01-01",
    "start_date=2025-01-01&end_date=2026-01-01", "status=pending", "service_code=nope",
    "service_request_id=abc", "service_request_id=2026-000001,%27%3B--", "start_date=" + "9" * 500,
])
def test_junk_queries_are_client_errors(api: httpx.Client, query: str) -> None:
    r = api.get(f"/requests.json?{query}")
    assert 400 <= r.status_code < 500, (query, r.status_code, r.text)
    _is_error_list(r, 400)
    assert api.get(f"/requests.xml?{query}").status_code == 400


@pytest.mark.parametrize("path", [
    "/requests/abc.json", "/requests/2026-00001.json", "/requests/9999-999999.json", "/requests/x.y.xml",
    "/requests/2026-000001.txt", "/requests/2026-000001", "/tokens/nope.json", "/tokens/2026-999999.xml",
    "/requests/%00.json", "/services.yaml", "/requests.csv",
])
def test_junk_ids_are_404(api: httpx.Client, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text)
    if path.endswith(".xml"):
        assert ET.fromstring(r.content).tag == "errors"
    else:
        assert r.json()[0]["code"] == 404


def test_request_filters(api: httpx.Client, live_server_handle: Any) -> None:
    a = _create(api, service_code="environment.noise")
    b = _create(api, service_code="environment.noise")
    c = _create(api, service_code="safety.hazard")
    live_server_handle.app.state.engine.requests.update_status(b, "resolved", note="처리 완료")

    ids = f"{a},{b},{c}"
    got = {r["service_request_id"] for r in api.get(f"/requests.json?service_request_id={ids}").json()}
    assert got == {a, b, c}

    noise = api.get("/requests.json?service_code=environment.noise").json()
    assert {a, b} <= {r["service_request_id"] for r in noise}
    assert {r["service_code"] for r in noise} == {"environment.noise"}

    closed = api.get("/requests.json?service_code=environment.noise&status=closed").json()
    assert b in {r["service_request_id"] for r in closed} and a not in {r["service_request_id"] for r in closed}
    assert all(r["status"] == "closed" for r in closed)
    [rb] = api.get(f"/requests/{b}.json").json()
    assert rb["status"] == "closed" and rb["status_notes"] == "처리 완료"

    both = api.get("/requests.json?service_code=environment.noise,safety.hazard&status=open,closed").json()
    assert {a, b, c} <= {r["service_request_id"] for r in both}

    # Dates: now is inside a window ending tomorrow; a window last month holds none of them.
    now = datetime.now().astimezone()
    window = {"start_date": (now - timedelta(days=1)).isoformat(), "end_date": (now + timedelta(days=1)).isoformat()}
    recent = api.get("/requests.json", params=window).json()
    assert {a, b, c} <= {r["service_request_id"] for r in recent}
    old = {"start_date": (now - timedelta(days=60)).strftime("%Y-%m-%d"),
           "end_date": (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert not {a, b, c} & {r["service_request_id"] for r in api.get("/requests.json", params=old).json()}
    # An unencoded "+09:00" arrives as " 09:00": still understood.
    r = api.get(f"/requests.json?start_date={(now - timedelta(days=1)).strftime('%Y-%m-%dT%H:%M:%S')}+09:00")
    assert r.status_code == 200

    root = ET.fromstring(api.get(f"/requests.xml?service_request_id={ids}").content)
    assert root.tag == "service_requests"
    assert {r.findtext("service_request_id") for r in root.findall("request")} == {a, b, c}


def test_key_from_cli_store(api: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert main(["open311", "keys", "add", "city-app"]) == 0
    key = capsys.readouterr().out.strip()
    stored = (tmp_path / "keys.json").read_text(encoding="utf-8")
    assert key not in stored and "city-app" in stored  # only the hash is kept
    _create(api, api_key=key)
    assert main(["open311", "keys", "list"]) == 0
    assert "city-app" in capsys.readouterr().out


def test_third_party_client(api: httpx.Client, live_server: str) -> None:
    georeport = pytest.importorskip("georeport")
    ticket = _create(api, service_code="waste.illegal_dumping")
    for fmt in ("json", "xml"):
        client = georeport.GeoReport(f"{live_server}/open311/v2", output_format=fmt)
        services = client.get_service_list()
        assert {s["service_code"] for s in services} == set(SERVICES)
        definition = client.get_service_definition("waste.illegal_dumping")
        assert definition["service_code"] == "waste.illegal_dumping"
        req = client.get_service_request(ticket)
        assert req["service_request_id"] == ticket and req["agency_responsible"] == "waste"
        found = client.get_service_requests(service_code="waste.illegal_dumping", status="open")
        found = found if isinstance(found, list) else [found]
        assert ticket in {r["service_request_id"] for r in found}


# --- issue 18: what the public feed may show ----------------------------------------------------

PRIVATE = "우리 집 한빛동 12-3 앞이에요. 연락은 ０１０－９８７６－５４３２ 또는 010–2222–3333, 900101-1234567"


def _stored(live_server_handle: Any, **fields: Any) -> str:
    """A request as the bot opens it from a private channel (SMS), with the resident's own words."""
    from bot.service_requests import RequestDraft

    # A service and place no other test reports (the shared server offers duplicates nearby).
    draft = RequestDraft(service_code="parks.tree_hazard", department="parks", description=PRIVATE,
                         address_string="한빛동 12-3 (010 4444 5555)", lat=37.551234, long=126.988765,
                         media_url="http://127.0.0.1:8000/webhooks/telegram/file/AgACpriv01", channel="twilio_sms",
                         sender_id="+821098765432", **fields)
    return live_server_handle.app.state.engine.requests.open(draft).ticket


def _digits_of_numbers_absent(text: str) -> None:
    for secret in ("9876", "９８７６", "5432", "５４３２", "2222", "3333", "4444", "5555", "1234567"):
        assert secret not in text, (secret, text)


def test_public_feed_shows_no_private_words_address_or_media_without_consent(api: httpx.Client,
                                                                             live_server_handle: Any) -> None:
    ticket = _stored(live_server_handle)
    for fmt in ("json", "xml"):
        r = api.get(f"/requests/{ticket}.{fmt}")
        assert r.status_code == 200
        assert "한빛동 12-3" not in r.text and "telegram/file" not in r.text
        _digits_of_numbers_absent(r.text)
    [pub] = api.get(f"/requests/{ticket}.json").json()
    assert pub["description"] == "" and pub["address"] is None and pub["media_url"] is None
    assert pub["lat"] == 37.551 and pub["long"] == 126.989  # approximate (≈ 100 m)
    assert pub["agency_responsible"] == "parks" and pub["service_code"] == "parks.tree_hazard"
    listed = api.get("/requests.json?service_code=parks.tree_hazard").text
    assert "한빛동 12-3" not in listed and "telegram/file" not in listed
    # A city system with a key keeps getting the full record, personal numbers masked.
    [full] = api.get(f"/requests/{ticket}.json", headers={"X-API-Key": KEY}).json()
    assert "한빛동 12-3" in full["description"] and full["lat"] == pytest.approx(37.551234)
    assert full["media_url"].startswith("http://127.0.0.1:8000/webhooks/telegram/file/AgACpriv01?exp=")
    assert "9876" not in full["description"] and "2222" not in full["description"]
    # A key in the query string is not read (access logs keep query strings).
    [q] = api.get(f"/requests/{ticket}.json?api_key={KEY}").json()
    assert q["description"] == ""


def test_consented_words_are_published_with_every_number_digit_starred(api: httpx.Client,
                                                                       live_server_handle: Any) -> None:
    ticket = _stored(live_server_handle, publish_consent=True)
    for fmt in ("json", "xml"):
        r = api.get(f"/requests/{ticket}.{fmt}")
        assert "우리 집 한빛동 12-3 앞이에요" in r.text
        _digits_of_numbers_absent(r.text)
    [pub] = api.get(f"/requests/{ticket}.json").json()
    assert pub["address"].startswith("한빛동 12-3") and pub["media_url"] is None


def test_xml_feed_parses_after_hostile_input(api: httpx.Client, live_server_handle: Any) -> None:
    """One POST with control characters broke the XML feed for everyone."""
    hostile = "구멍\x00\x01\x08\x0b\x1b[31m 있어요"
    _is_error_list(_post(api, description=hostile), 400)
    _is_error_list(api.post("/requests.json", json={"api_key": KEY, "service_code": "roads.pothole",
                                                    "address_string": "한빛\x0c동", "description": "x"}), 400)
    # Text from other channels may still hold them: the feed drops what XML cannot carry.
    from bot.service_requests import RequestDraft

    draft = RequestDraft(service_code="roads.pothole", department="roads", description=hostile,
                         address_string="한빛동\x1f 1", channel="rest", sender_id="hostile-xml", publish_consent=True)
    ticket = live_server_handle.app.state.engine.requests.open(draft).ticket
    for path in (f"/requests/{ticket}.xml", "/requests.xml"):
        root = ET.fromstring(api.get(path, headers={"X-API-Key": KEY}).content)
        assert root.tag == "service_requests"
        ET.fromstring(api.get(path).content)


def test_post_key_in_the_query_string_is_refused(api: httpx.Client) -> None:
    r = api.post(f"/requests.json?api_key={KEY}", data={"service_code": "roads.pothole", "address_string": "x"})
    _is_error_list(r, 403)
    ok = api.post("/requests.json", data={"service_code": "roads.pothole", "address_string": "한빛동 1"},
                  headers={"X-API-Key": KEY})
    assert ok.status_code == 201


def test_publish_consent_of_the_conversation_reaches_the_feed(api: httpx.Client, live_server_handle: Any) -> None:
    """The conversation asks (the policy's job); ``request_opened`` carries ``publish_consent``."""
    from bot.messages import Event, Turn

    no, yes = _stored(live_server_handle), _stored(live_server_handle)
    inbox = live_server_handle.app.state.inbox
    inbox._record_publish_consent(Turn("rest:x", "ko", "roads.pothole", 1.0, events=[
        Event("request_opened", {"ticket": yes, "publish_consent": True}),
        Event("request_opened", {"ticket": no, "publish_consent": "yes please"})]))  # only True counts
    assert "우리 집" in api.get(f"/requests/{yes}.json").json()[0]["description"]
    assert api.get(f"/requests/{no}.json").json()[0]["description"] == ""


def test_a_resident_who_says_publish_in_the_conversation_appears_in_the_feed(api: httpx.Client,
                                                                            live_server: str) -> None:
    """End to end: the confirmation's '공개' (bot/dialogue/policy.py) → ``public_consent`` → the feed,
    with the resident's number starred; a resident who did not say it stays private."""
    def visit(sender: str, publish: bool, place: str) -> str:
        say = lambda text: httpx.post(f"{live_server}/webhooks/rest/webhook", timeout=60,  # noqa: E731
                                      json={"sender": sender, "message": text}).json()
        say("도로에 구멍이 났어요 차가 빠질 만큼 커요 제 번호 010-9876-5432")
        say(f"{place} 앞이요")  # its own place: the shared server holds other tests' potholes (duplicates)
        say("아니요")  # no call-back
        if publish:
            say("공개해 주세요")
        done = say("네")[-1]["text"]
        return re.search(r"\d{4}-\d{6}", done).group()

    public, private = visit("pub-yes-1", True, "한빛동 은행나무로 41"), visit("pub-no-1", False, "한빛동 느티나무로 87")
    [pub] = api.get(f"/requests/{public}.json").json()
    assert "차가 빠질 만큼" in pub["description"] and pub["address"] == "한빛동 은행나무로 41 앞"
    assert not any(d in pub["description"] for d in ("010", "9876", "5432"))
    [priv] = api.get(f"/requests/{private}.json").json()
    assert priv["description"] == "" and priv["address"] is None
