"""Console passwords: the policy (ASVS 2.1) and argon2 on a bounded pool.

Policy (:func:`check_policy`): at least 12 and at most 128 characters, any characters (spaces and
Unicode included, nothing truncated), not containing the username (of 4 or more characters), not
one character repeated, and not on the list of common and breached passwords shipped in
``common_passwords.txt`` (compared in lower case). No composition rules and no forced rotation (ASVS 2.1.9, 2.1.10).

Hashing: argon2id is slow by design (tens of milliseconds of one core), so a flood of login
attempts would starve everything else, ``/healthz`` included (README, "Figures behind choices in
the code"). Every hash and verify takes one of :data:`SLOTS` slots (half the cores, at least one); async callers
wait on :func:`run_bounded`'s own small executor, not in the shared thread pool, and past
:data:`MAX_QUEUE` waiting attempts the caller gets :class:`HashingBusy` (answered 503) at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

MIN_LENGTH = 12
MAX_LENGTH = 128
SLOTS = max(1, (os.cpu_count() or 2) // 2)
MAX_QUEUE = 32
LIST_PATH = Path(__file__).resolve().parent / "common_passwords.txt"

_slots = threading.BoundedSemaphore(SLOTS)
_pool = ThreadPoolExecutor(max_workers=SLOTS, thread_name_prefix="pcrm-argon2")
_waiting = 0
_waiting_lock = threading.Lock()
T = TypeVar("T")


class HashingBusy(Exception):
    """Too many password checks are waiting; try again shortly."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The shipped list, lower case."""
    lines = LIST_PATH.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def check_policy(password: str, username: str = "") -> None:
    """``ValueError`` (with the reason, in English) unless ``password`` may be used."""
    if len(password) < MIN_LENGTH:
        raise ValueError(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise ValueError(f"password must be at most {MAX_LENGTH} characters")
    low = password.lower()
    if len(set(password)) == 1:
        raise ValueError("password must not be one character repeated")
    name = username.strip().lower()
    if name and (low == name or (len(name) >= 4 and name in low)):
        raise ValueError("password must not contain the username")
    if low in common_passwords():
        raise ValueError("password is on the list of common or breached passwords")


class _Slot:
    """One hashing slot (a context manager); waits at most ``timeout`` seconds."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def __enter__(self) -> None:
        got = _slots.acquire(blocking=False) if self.timeout <= 0 else _slots.acquire(timeout=self.timeout)
        if not got:
            raise HashingBusy("password hashing is busy")

    def __exit__(self, *exc: Any) -> None:
        _slots.release()


def slot(timeout: float | None = None) -> _Slot:
    """``with slot():`` around every argon2 hash or verify. ``timeout`` 0: do not wait at all (callers
    on the shared thread pool, e.g. HTTP Basic, must not hold its threads while waiting)."""
    return _Slot(_default_timeout.get() if timeout is None else timeout)


#: How long :func:`slot` waits by default; HTTP Basic sets 0 for its call (:func:`no_wait`).
_default_timeout: ContextVar[float] = ContextVar("pcrm_hash_wait", default=30.0)


class no_wait:  # noqa: N801 - used as ``with no_wait():``
    """Within this block :func:`slot` does not wait for a free slot (:class:`HashingBusy` instead)."""

    def __enter__(self) -> None:
        self._token = _default_timeout.set(0.0)

    def __exit__(self, *exc: Any) -> None:
        _default_timeout.reset(self._token)


async def run_bounded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the hashing executor; :class:`HashingBusy` when too many already wait."""
    global _waiting
    with _waiting_lock:
        if _waiting >= MAX_QUEUE:
            raise HashingBusy("too many password checks waiting")
        _waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_pool, lambda: fn(*args))
    finally:
        with _waiting_lock:
            _waiting -= 1
