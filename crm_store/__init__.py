"""Shared resident profile store.

One resident, many channels: SMS, voice, Telegram, KakaoTalk and web chat all
resolve to the same :class:`~crm_store.models.Resident`, so an agent sees the whole
history and a resident can see or erase everything we hold in one place.

Modules are split per aggregate (residents, conversations, interactions, requests,
hand-offs, one-time codes) so each stays small; ``db`` builds engines and runs the
Alembic migrations.
"""
