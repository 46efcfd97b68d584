"""Alembic migrations of the store (run them with :func:`crm_store.db.upgrade`)."""
