"""Phone numbers: moved to :mod:`bot.phones` (channel-neutral, so channels may use it without
the store); re-exported here for the store's own modules and older importers."""

from bot.phones import DEFAULT_REGION, PHONE_CHANNELS, PHONE_IDENTITY, is_phone_channel, normalize_phone

__all__ = ["DEFAULT_REGION", "PHONE_CHANNELS", "PHONE_IDENTITY", "is_phone_channel", "normalize_phone"]
