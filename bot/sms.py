"""The send-SMS interface: one-time codes and notifications the centre initiates.

The Twilio SMS channel backs it in production (``channels.twilio_sms.SmsSender``);
without Twilio settings the app uses :class:`LogOnlySmsSender`, which sends
nothing and logs the masked number, so development needs no account.
"""

from __future__ import annotations

import logging
from typing import Protocol

from bot.masking import mask_pii

log = logging.getLogger("pcrm.sms")


class SmsSender(Protocol):
    async def send_sms(self, to: str, body: str) -> bool:
        """Send one SMS; False when it could not be sent (not configured, opted out, refused)."""
        ...


class LogOnlySmsSender:
    """Development stand-in: logs that an SMS would go out, sends nothing."""

    async def send_sms(self, to: str, body: str) -> bool:
        log.warning("SMS not configured; would send to %s: %s", mask_pii(to), mask_pii(body))
        return False
