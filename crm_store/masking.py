"""Masking of personal data: moved to :mod:`bot.masking` (channel-neutral, so channels and the
engine may mask their logs without importing the store). Re-exported only for ``bot/inbox.py``;
delete this file once that imports :mod:`bot.masking` (nothing else imports it)."""

from bot.masking import mask_phone, mask_pii, mask_rrn

__all__ = ["mask_phone", "mask_pii", "mask_rrn"]
