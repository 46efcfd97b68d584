"""Photos from the web chat: ``POST /webchat/photo`` (multipart ``key``, ``file``, ``lang``).

``key`` is the widget's session key (bot/webchat_keys.py; or the ``X-Webchat-Key`` header): the
session is derived from it, so knowing a session id is not enough to post into a conversation.

Telegram and Kakao residents could always send a photo; web-chat residents could not. The widget's
camera button (``capture`` opens the camera on phones) uploads the file here. It is checked (type,
size), its EXIF position read and then stripped (bot/media.py), and it enters the conversation as
a message with a ``photo`` attachment — plus a ``location`` one when the photo knew where it was
taken, so "사진만 보내도" the report has its place. The bot's replies travel over the session's
socket like any push (``conv:webchat:<session>``); the JSON answer says what was kept.
"""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bot.media import MAX_BYTES, PhotoError, media_dir, store_photo
from bot.messages import Attachment, Message, new_id
from bot.ports import ChannelPort
from bot.settings import Settings
from bot.webchat_keys import KEY_HEADER, session_of
from channels.webchat import SESSION_RULE, bot_frame, topic_of


def photo_router(port: ChannelPort, settings: Settings) -> APIRouter:
    """``POST /webchat/photo``, handing photos to ``port`` (the inbox) like the socket's messages."""
    router = APIRouter(tags=["webchat"])

    @router.post("/webchat/photo", summary="A photo from the web-chat widget (EXIF location used, then stripped)")
    async def webchat_photo(request: Request, key: str = Form("", max_length=100), lang: str = Form("ko"),
                            file: UploadFile = File(...)) -> JSONResponse:
        try:
            session = session_of(key or request.headers.get(KEY_HEADER, ""))
        except ValueError:
            return JSONResponse({"detail": SESSION_RULE}, status_code=400)
        data = await file.read(MAX_BYTES + 1)
        try:
            stored = await run_in_threadpool(store_photo, data, media_dir(settings))
        except PhotoError as exc:
            return JSONResponse({"detail": str(exc)},
                                status_code=415 if "type" in str(exc) or "image" in str(exc) else 413)
        url = f"{settings.pcrm_public_url.rstrip('/')}/field/media/{stored.name}"
        attachments = [Attachment(kind="photo", url=url)]
        if stored.lat is not None and stored.long is not None:
            attachments.append(Attachment(kind="location", lat=stored.lat, long=stored.long))
        message = Message(channel="webchat", sender_id=session, text="", lang="en" if lang == "en" else "ko",
                          attachments=attachments, message_id=new_id())
        turn = await port.receive(message)
        for reply in turn.replies:
            await port.publish(topic_of(session), bot_frame(reply))
        return JSONResponse({"ok": True, "location_from_photo": stored.lat is not None,
                             "lat": stored.lat, "long": stored.long}, headers={"Cache-Control": "no-store"})

    return router
