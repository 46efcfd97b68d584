"""Phone numbers: moved to :mod:`bot.phones` (channel-neutral, so channels may use it without
the store). Re-exported only for ``bot/inbox.py``; delete this file once that imports
:mod:`bot.phones` (nothing else imports it)."""

from bot.phones import DEFAULT_REGION, PHONE_CHANNELS, PHONE_IDENTITY, is_phone_channel, normalize_phone

__all__ = ["DEFAULT_REGION", "PHONE_CHANNELS", "PHONE_IDENTITY", "is_phone_channel", "normalize_phone"]
