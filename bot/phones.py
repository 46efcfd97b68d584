"""Phone number normalisation.

SMS and voice identify a resident by phone number, written in many ways
(``010-1234-5678``, ``+82 10-1234-5678``, ``+821012345678``).  Everything the store
keeps is E.164 so those are one resident, not three.
"""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "KR"

#: Channels whose sender id is a phone number.
PHONE_CHANNELS = frozenset({"twilio_sms", "twilio_voice", "sms", "voice"})

#: Pseudo-channel of a ChannelIdentity holding a phone number the resident gave us
#: (or that an SMS/voice identity implies).  It is what links channels together.
PHONE_IDENTITY = "phone"


def normalize_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    """``raw`` in E.164 (``+821012345678``); ``ValueError`` when it is not a phone number."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {raw!r}") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"not a possible phone number: {raw!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_phone_channel(channel: str) -> bool:
    """Whether ``channel``'s sender ids are phone numbers."""
    return channel in PHONE_CHANNELS or channel == PHONE_IDENTITY
