"""Photos: type and size checked, the EXIF position read, then every bit of metadata stripped."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.app import create_app
from bot.media import MAX_BYTES, PhotoError, store_photo
from bot.webchat_keys import session_of
from tests.channel_servers import ServerThread
from tests.test_rest_app import _rows, _settings


def _photo(gps: tuple[float, float] | None = (37.5665, 126.9781), size: tuple[int, int] = (64, 48),
           noise: bool = False) -> bytes:
    img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make: the kind of detail that must not survive
    exif[0x013B] = "김민지"  # Artist
    if gps:
        def dms(v: float) -> tuple[float, float, float]:
            d = int(v)
            m = int((v - d) * 60)
            return (float(d), float(m), round((v - d - m / 60) * 3600, 4))

        exif[0x8825] = {1: "N", 2: dms(gps[0]), 3: "E", 4: dms(gps[1])}
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_the_position_is_read_and_the_metadata_is_gone(tmp_path: Path) -> None:
    stored = store_photo(_photo(), tmp_path)
    assert stored.lat == pytest.approx(37.5665, abs=1e-4) and stored.long == pytest.approx(126.9781, abs=1e-4)
    data = stored.path.read_bytes()
    assert b"PhoneMaker" not in data and "김민지".encode() not in data
    assert len(Image.open(stored.path).getexif()) == 0


def test_not_a_photo_or_too_big_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PhotoError):
        store_photo(b"%PDF-1.4 not an image", tmp_path)
    with pytest.raises(PhotoError):
        store_photo(b"\xff" * (MAX_BYTES + 1), tmp_path)
    assert store_photo(_photo(gps=None), tmp_path).lat is None


def test_a_web_chat_photo_with_a_position_fills_the_reports_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pcrm.db'}"
    server = ServerThread(create_app(_settings(url, tmp_path))).start()
    key = "photo-session-1".ljust(22, "_")  # the widget's key; the server derives the session id
    session = session_of(key)
    try:
        r = httpx.post(f"{server.url}/webhooks/rest/webhook", json={"sender": "x", "message": "hi"}, timeout=60)
        assert r.status_code == 200
        # A real phone photo is megabytes: more than the app's usual 256 KB body limit.
        big = _photo(size=(700, 700), noise=True)
        assert len(big) > 256 * 1024
        from bot.messages import Message

        app = server.app
        server.call(app.state.inbox.receive(Message("webchat", session, "도로에 포트홀이 있어요")))
        r = httpx.post(f"{server.url}/webchat/photo", data={"key": key, "lang": "ko"},
                       files={"file": ("p.jpg", big, "image/jpeg")}, timeout=60)
        assert r.status_code == 200 and r.json()["location_from_photo"] is True
        r = httpx.post(f"{server.url}/webchat/photo", data={"key": key},
                       files={"file": ("p.txt", b"hello", "text/plain")}, timeout=60)
        assert r.status_code in (413, 415)
    finally:
        server.stop()
    state = _rows(url, "SELECT state FROM conversations WHERE key = :k", k=f"webchat:{session}")[0][0]
    assert "한빛로 118" in state and "/field/media/" in state


def test_a_kakao_image_plugin_parameter_becomes_photo_attachments() -> None:
    from channels.kakao import KakaoChannel

    action = {"params": {"secureimage": '{"privacyAgreement":"Y","imageQuantity":"2","secureUrls":'
                                        '"List(https://talk.kakaocdn.net/a.jpg, https://talk.kakaocdn.net/b.jpg)"}'},
              "detailParams": {}}
    atts = KakaoChannel._attachments(action)
    assert [(a.kind, a.url) for a in atts] == [("photo", "https://talk.kakaocdn.net/a.jpg"),
                                               ("photo", "https://talk.kakaocdn.net/b.jpg")]
    both = KakaoChannel._attachments({"params": {"사진": "https://x.example/c.png", "location": "중앙로 12"}})
    assert [a.kind for a in both] == ["photo", "location"]


def test_a_stored_photo_belongs_to_the_departments_of_the_requests_that_show_it(session_factory) -> None:
    """/field/media/<name> is served only to staff who can see one of these departments."""
    from bot.service_requests import RequestDraft
    from crm_store.requests import SqlRequestStore
    from crm_store.work_orders import media_departments

    store = SqlRequestStore(session_factory)
    store.open(RequestDraft("roads.pothole", "roads", "구멍", "한빛로 9",
                            media_url="http://127.0.0.1:8000/field/media/abc123.jpg"))
    assert media_departments(session_factory, "abc123.jpg") == {"roads"}
    assert media_departments(session_factory, "unknown.jpg") == set()  # nobody's yet: only who sees all
