"""Web chat over a real WebSocket against the real app (uvicorn, SQLite, the trained NLU)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bot.messages import Reply
from bot.webchat_keys import new_key, protocols_for, session_of
from crm_store.models import Conversation, Interaction

TICKET = re.compile(r"\d{4}-\d{6}")
TURN_TIMEOUT = 60.0
QUIET = 1.0


def chat(base: str, key: str, lang: str = "ko") -> Any:
    """A socket of the session of ``key`` (the key in the subprotocol list, as the widget sends it)."""
    return connect(base.replace("http://", "ws://") + f"/webchat/ws?lang={lang}", subprotocols=protocols_for(key))


def new_session() -> str:
    """A new session key (the session id is ``session_of(key)``)."""
    return new_key()


async def recv(ws: ClientConnection, timeout: float = TURN_TIMEOUT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def turn(ws: ClientConnection, frame: dict[str, Any] | str) -> list[dict[str, Any]]:
    """Send one frame; return the bot frames of the answer (after the typing frame)."""
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False))
    first = await recv(ws)
    assert first["type"] == "typing", first
    frames = [await recv(ws)]
    while True:
        try:
            frames.append(await recv(ws, QUIET))
        except TimeoutError:
            return frames


async def say(ws: ClientConnection, text: str) -> tuple[str, list[dict[str, Any]]]:
    """Send a text message; return the joined bot text and the frames."""
    frames = await turn(ws, {"type": "message", "text": text})
    assert all(f["type"] == "bot" for f in frames), frames
    for f in frames:
        assert isinstance(f["buttons"], list) and isinstance(f["hints"], dict)
        assert all(set(b) == {"title", "payload"} for b in f["buttons"])
    return "\n".join(f["text"] for f in frames), frames


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_faq_question_gets_a_real_answer(live_server: str) -> None:
    async def go() -> str:
        async with chat(live_server, new_session()) as ws:
            text, _ = await say(ws, "쓰레기 언제 버려요?")
            return text

    answer = run(go())
    assert re.search(r"배출|쓰레기", answer), answer
    assert "다음 중 어떤" not in answer, f"got a clarification, not an answer: {answer}"


def test_pothole_report_ends_with_a_ticket(live_server: str) -> None:
    async def go() -> list[str]:
        texts = []
        async with chat(live_server, new_session()) as ws:
            for msg in ("도로에 구멍이 났어요", "한빛동 중앙로 21", "예", "예"):
                text, _ = await say(ws, msg)
                texts.append(text)
        return texts

    asked_location, asked_consent, confirm, done = run(go())
    assert re.search(r"위치|주소|어디", asked_location), asked_location
    assert "중앙로 21" in confirm, confirm  # the address extractor keeps the street part
    assert TICKET.search(done), done


def test_reconnect_continues_a_half_filled_form(live_server: str) -> None:
    session = new_session()

    async def first_socket() -> str:
        async with chat(live_server, session) as ws:
            text, _ = await say(ws, "도로에 구멍이 났어요")
            return text

    async def second_socket() -> list[str]:
        async with chat(live_server, session) as ws:
            # Its own address: the shared server holds other tests' potholes (a duplicate would be offered).
            return [(await say(ws, msg))[0] for msg in ("한빛동 새솔로 33", "예", "예")]

    asked = run(first_socket())
    assert re.search(r"위치|주소|어디", asked), asked
    _consent, confirm, done = run(second_socket())
    assert "새솔로 33" in confirm, confirm  # the address extractor keeps the street part
    assert TICKET.search(done), done

    history = httpx.get(f"{live_server}/webchat/history", headers={"X-Webchat-Key": session}).json()
    msgs = history["messages"]
    assert [m["text"] for m in msgs if m["direction"] == "in"] == [
        "도로에 구멍이 났어요", "한빛동 새솔로 33", "예", "예"]
    assert any(TICKET.search(m["text"]) for m in msgs if m["direction"] == "out")
    assert all({"direction", "text", "created_at"} <= set(m) for m in msgs)


def test_location_frame_fills_the_location(live_server: str) -> None:
    async def go() -> tuple[str, str]:
        async with chat(live_server, new_session()) as ws:
            await say(ws, "도로에 구멍이 났어요")
            frames = await turn(ws, {"type": "location", "lat": 37.5665, "long": 126.978})
            consent_text = "\n".join(f["text"] for f in frames)
            confirm, _ = await say(ws, "예")
            return consent_text, confirm

    consent, confirm = run(go())
    # The shared point is read back as the nearest district address (bot/geo.py), not as numbers.
    assert "한빛로 118 (한빛동) 부근" in consent and "한빛로 118" in confirm, confirm


def test_malformed_frames_get_an_error_and_keep_the_socket(live_server: str) -> None:
    async def go() -> tuple[list[dict[str, Any]], str]:
        errors = []
        async with chat(live_server, new_session()) as ws:
            for bad in ("not json", "[1, 2]", json.dumps({"type": "message", "text": 5}),
                        json.dumps({"type": "dance"}), json.dumps({"type": "message", "text": "가" * 5001}),
                        json.dumps({"type": "location", "lat": 999, "long": 0}),
                        json.dumps({"type": "message", "text": "안녕", "id": "bad id!"})):
                await ws.send(bad)
                errors.append(await recv(ws))
            await ws.send(b"\x00binary")
            errors.append(await recv(ws))
            text, _ = await say(ws, "안녕하세요")
        return errors, text

    errors, text = run(go())
    for e in errors:
        assert e["type"] == "error" and isinstance(e["reason"], str) and e["reason"], e
    assert text  # the socket still works after the errors


@pytest.mark.parametrize("session", ["", "short", "bad!session", "x" * 90, "..-..-etc"])
def test_a_session_id_without_its_key_closes_4400(live_server: str, session: str) -> None:
    """Knowing a session id (from a log or the console) no longer opens that conversation:
    ``?session=`` is ignored and anything but a well-formed key in the subprotocol is refused."""
    async def go() -> ConnectionClosed:
        url = live_server.replace("http://", "ws://") + "/webchat/ws?session=" + session_of(new_key())
        protocols = ["pcrm-webchat", "pcrm-key." + session] if session else None
        async with connect(url, subprotocols=protocols) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await recv(ws, 10)
            return info.value

    closed = run(go())
    assert closed.rcvd is not None and closed.rcvd.code == 4400
    assert closed.rcvd.reason


def test_history_needs_the_session_key(live_server: str) -> None:
    assert httpx.get(f"{live_server}/webchat/history", params={"session": "x"}).status_code == 400
    assert httpx.get(f"{live_server}/webchat/history", params={"session": session_of(new_key())}).status_code == 400
    empty = httpx.get(f"{live_server}/webchat/history", headers={"X-Webchat-Key": new_session()})
    assert empty.status_code == 200 and empty.json()["messages"] == []


def test_hostile_text_is_stored_verbatim(live_server: str, live_server_settings: Any) -> None:
    session = new_session()
    hostile = "<script>alert(1)</script>"

    async def go() -> None:
        async with chat(live_server, session) as ws:
            await say(ws, hostile)

    run(go())
    engine = create_engine(live_server_settings.database_url)
    try:
        with engine.connect() as conn:
            key = f"webchat:{session_of(session)}"
            conv_id = conn.execute(select(Conversation.id).where(Conversation.key == key)).scalar()
            texts = conn.execute(select(Interaction.text).where(
                Interaction.conversation_id == conv_id, Interaction.direction == "in")).scalars().all()
    finally:
        engine.dispose()
    assert texts == [hostile]
    history = httpx.get(f"{live_server}/webchat/history", headers={"X-Webchat-Key": session}).json()
    assert history["messages"][0]["text"] == hostile


def test_client_id_deduplicates_a_resent_message(live_server: str, live_server_settings: Any) -> None:
    session = new_session()
    frame = {"type": "message", "text": "민원실 몇 시까지 해요?", "id": "m1"}

    async def go() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with chat(live_server, session) as ws:
            first = await turn(ws, frame)
        async with chat(live_server, session) as ws:  # reconnect and resend
            again = await turn(ws, frame)
        return first, again

    first, again = run(go())
    assert [f["text"] for f in again] == [f["text"] for f in first]
    assert all(f.get("reply_to") == "m1" for f in first)
    history = httpx.get(f"{live_server}/webchat/history", headers={"X-Webchat-Key": session}).json()
    assert [m["text"] for m in history["messages"] if m["direction"] == "in"] == [frame["text"]]


def test_agent_messages_and_pushes_reach_the_socket(live_server_handle: Any) -> None:
    session = new_session()
    server = live_server_handle
    channel = server.app.state.channels["webchat"]
    live = server.app.state.live

    topic = f"conv:webchat:{session_of(session)}"
    agent_text = "상담원 김한빛입니다. <b>도와드릴게요</b>"

    async def go() -> list[dict[str, Any]]:
        async with chat(server.url, session) as ws:
            await say(ws, "안녕하세요")  # the socket is subscribed by now
            loop = asyncio.get_running_loop()
            for coro in (live.publish(topic, {"type": "internal", "secret": "x"}),
                         live.publish(topic, {"type": "agent", "text": agent_text}),
                         channel.send(session_of(session), [Reply("처리 완료되었습니다.")])):
                await loop.run_in_executor(None, server.call, coro)
            return [await recv(ws, 10), await recv(ws, 10)]

    agent, pushed = run(go())
    assert agent == {"type": "agent", "text": agent_text}
    assert pushed["type"] == "bot" and pushed["text"] == "처리 완료되었습니다."
