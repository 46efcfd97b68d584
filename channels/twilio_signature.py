"""Checking that a webhook really comes from Twilio (``X-Twilio-Signature``).

Shared by the SMS and voice adapters (it is not an adapter itself). Twilio signs
the full URL it requested plus the sorted POST parameters. Behind a proxy the
URL the app sees differs from the one Twilio used, so the URL is rebuilt from
``PCRM_PUBLIC_URL`` + path + the raw (still percent-encoded) query string.

By default the key is the account Auth Token (HMAC-SHA1). When a Twilio Webhook
Rule signs with a SharedKey, the request carries
``X-Twilio-Webhooks-Signature-Settings: key=…,algorithm=HMAC_SHA256`` and the key
is ``TWILIO_WEBHOOK_SHARED_KEY``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from bot.settings import Settings


def public_url(settings: Settings, path: str) -> str:
    """Absolute URL of ``path`` as Twilio reaches it."""
    return settings.pcrm_public_url.rstrip("/") + path


def signed_url(settings: Settings, request: Request) -> str:
    """The URL Twilio signed: public base + path + raw query string."""
    url = public_url(settings, request.url.path)
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{url}?{query}" if query else url


async def form_params(request: Request) -> dict[str, Any]:
    """The POST form as Twilio sent it (repeated keys become lists, as the validator expects)."""
    form = await request.form()
    params: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            continue  # Twilio never uploads files to a webhook
        if key in params:
            prev = params[key]
            params[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            params[key] = value
    return params


class _MultiDict(dict):
    """Lets :class:`RequestValidator` see every value of a repeated parameter."""

    def getall(self, key: str) -> list[str]:
        value = self[key]
        return list(value) if isinstance(value, list) else [value]


def check_signature(settings: Settings, request: Request, params: dict[str, Any]) -> JSONResponse | None:
    """``None`` when the request is genuinely Twilio's, else the error response to return."""
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return JSONResponse({"detail": "missing X-Twilio-Signature"}, status_code=403)
    sig_settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
    if sig_settings:
        key = settings.twilio_webhook_shared_key
        if not key:
            return JSONResponse({"detail": "webhook signed with a SharedKey but TWILIO_WEBHOOK_SHARED_KEY "
                                           "is not configured"}, status_code=500)
    else:
        key = settings.twilio_auth_token
        if not key:
            return JSONResponse({"detail": "TWILIO_AUTH_TOKEN is not configured; "
                                           "unsigned webhooks are refused"}, status_code=403)
    algorithm = get_signature_algorithm(sig_settings)
    ok = RequestValidator(key).validate(signed_url(settings, request), _MultiDict(params), signature,
                                        algorithm=algorithm)
    if not ok:
        return JSONResponse({"detail": "invalid X-Twilio-Signature"}, status_code=403)
    return None


def first(params: dict[str, Any], key: str) -> str:
    """One form value as a stripped string ('' when absent), without NUL characters (which no
    SMS or transcript carries and PostgreSQL cannot store)."""
    value = params.get(key, "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).replace("\x00", "").strip()
