"""Rasa-compatible REST channel: ``POST /webhooks/rest/webhook``.

``{"sender": "...", "message": "..."}`` in, ``[{"recipient_id", "text", "buttons"?}]``
out, exactly as Rasa's ``RestInput`` does, so existing clients and test scripts
work unchanged.

With ``PCRM_REST_TOKEN`` set, every message must carry ``Authorization: Bearer <token>``
(401 otherwise): the channel trusts the client's ``sender``, so in production only the
integrating system that holds the token may speak for its residents. Unset (development,
``make run``): open, as Rasa's REST channel is; ``pcrm doctor`` lists it.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from bot.messages import Message, Turn
from channels.base import ChannelAdapter


class RestMessage(BaseModel):
    """One message from a REST client."""

    sender: str = Field(min_length=1, max_length=128, description="The client's id for the resident")
    message: str = Field(max_length=20000, description="What the resident wrote")
    metadata: dict[str, Any] | None = Field(default=None, description="Anything the client wants stored")
    lang: str | None = Field(default=None, pattern="^(ko|en)$", description="Language hint")

    @field_validator("message")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:  # PostgreSQL text cannot hold it; refused rather than silently changed
            raise ValueError("message must not contain NUL (U+0000) characters")
        return value


class RestButton(BaseModel):
    title: str
    payload: str


class RestReply(BaseModel):
    recipient_id: str
    text: str
    buttons: list[RestButton] | None = None


def render(turn: Turn, recipient_id: str) -> list[dict[str, Any]]:
    """Rasa's REST output: one object per reply, buttons only when there are some."""
    out = []
    for reply in turn.replies:
        item: dict[str, Any] = {"recipient_id": recipient_id, "text": reply.text}
        if reply.buttons:
            item["buttons"] = [{"title": b.title, "payload": b.payload} for b in reply.buttons]
        out.append(item)
    return out


class RestChannel(ChannelAdapter):
    name = "rest"

    def router(self) -> APIRouter:
        r = APIRouter(tags=["channels"])

        @r.post("/webhooks/rest/webhook", response_model=list[RestReply], response_model_exclude_none=True,
                summary="Send a message (Rasa REST channel format)",
                responses={401: {"description": "PCRM_REST_TOKEN is set and the bearer token is missing or wrong"}})
        async def webhook(body: RestMessage, request: Request) -> Response:
            token = self.settings.pcrm_rest_token
            if token:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
            msg = Message(channel=self.name, sender_id=body.sender, text=body.message, lang=body.lang,  # type: ignore[arg-type]
                          metadata=body.metadata or {})
            turn = await self.inbox.receive(msg)
            # Serialised here: ``render`` already has the documented shape (``response_model``, for the
            # OpenAPI document); FastAPI's validate-then-serialise pass would only repeat it per message.
            return Response(json.dumps(render(turn, body.sender), ensure_ascii=False), media_type="application/json")

        @r.get("/webhooks/rest/", summary="REST channel health (as Rasa answers)")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        return r
