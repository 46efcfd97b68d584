"""The installation's secret when ``PCRM_SECRET_KEY`` is not set: random, made once, kept on disk.

A constant default secret (the old ``dev-insecure-change-me``) let anyone who read the source
forge console cookies and CSRF tokens on every installation that forgot to set one. Instead,
the first start writes 32 random bytes to ``var/secret_key`` (mode 0600, next to the model
cache; ``PCRM_SECRET_FILE`` overrides the path) and every later start and every worker reads the
same file, so ``make run`` still needs no set-up and sessions survive restarts. A warning says
that production should set ``PCRM_SECRET_KEY`` (``pcrm doctor`` lists it too).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger("pcrm.secrets")
_cache: dict[str, str] = {}


def secret_path(settings: Any = None) -> Path:
    if settings is None:  # Settings() itself passes itself: no recursion
        from bot.settings import get_settings

        settings = get_settings()
    override = getattr(settings, "pcrm_secret_file", None)
    if override:
        return Path(override)
    from bot.settings import ROOT

    return Path(getattr(settings, "pcrm_model_dir", None) or ROOT / "var" / "model").parent / "secret_key"


def installation_secret(settings: Any = None) -> str:
    """The per-installation secret (created on first use, race-free across workers)."""
    path = secret_path(settings)
    key = str(path)
    if key in _cache:
        return _cache[key]
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(candidate + "\n")
            log.warning("PCRM_SECRET_KEY is not set: created a random secret for this installation in %s; "
                        "set PCRM_SECRET_KEY in production (see `pcrm doctor`)", path)
        except FileExistsError:  # another worker made it first
            pass
        value = path.read_text(encoding="utf-8").strip()
    _cache[key] = value
    return value
