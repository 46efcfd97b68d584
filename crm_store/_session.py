"""Small session helpers shared by the query modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

T = TypeVar("T")


def attached(session: Session, obj: T) -> T:
    """``obj`` as an instance of ``session``.

    Callers may pass objects loaded in an earlier, already committed transaction
    (the web app records the message and the bot's answer in two); this fetches the
    session's own copy so changes are flushed in *this* transaction.
    """
    if obj in session:
        return obj
    found = session.get(type(obj), obj.id)  # type: ignore[attr-defined]
    if found is None:
        raise LookupError(f"{type(obj).__name__} {obj.id} no longer exists")  # type: ignore[attr-defined]
    return found


def insert_or_find(session: Session, create: Callable[[], T], find: Callable[[], T | None]) -> T:
    """Insert with ``create`` inside a SAVEPOINT; on a unique clash return ``find()``.

    Two workers handling the first two messages of one sender at the same moment
    both try to insert; the loser picks up the winner's row instead of failing.
    """
    try:
        with session.begin_nested():
            obj = create()
            session.add(obj)
        return obj
    except IntegrityError:
        found = find()
        if found is None:
            raise
        return found
