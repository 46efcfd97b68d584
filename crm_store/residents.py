"""Residents and their channel identities: identify, link a phone, merge, export, erase.

A person who texts from ``010-1234-5678``, later calls, and later writes on Telegram
and gives the same number is one resident with three identities.  Phone numbers
are kept in E.164 and also as a ``"phone"`` identity, which is what joins channels.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from bot.phones import PHONE_IDENTITY, is_phone_channel, normalize_phone
from crm_store._session import insert_or_find
from crm_store.models import (
    DELETED_TEXT,
    NOTE_ACTION,
    AuditLog,
    CallbackTask,
    ChannelIdentity,
    Conversation,
    Feedback,
    Handoff,
    HandoffNote,
    Interaction,
    OtpCode,
    Resident,
    ServiceRequest,
    audit,
)
from crm_store.timeutil import utcnow

#: Tables whose rows follow a resident through a merge.
_OWNED = (ChannelIdentity, Conversation, Interaction, ServiceRequest, Handoff, Feedback)


def _identity(session: Session, channel: str, external_id: str) -> ChannelIdentity | None:
    stmt = select(ChannelIdentity).where(
        ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
    )
    return session.scalars(stmt).one_or_none()


def _external_id(channel: str, external_id: str) -> str:
    """Phone channels' ids in E.164; other channels' ids as given."""
    return normalize_phone(external_id) if is_phone_channel(channel) else external_id


def _add_identity(session: Session, channel: str, external_id: str, resident: Resident) -> ChannelIdentity:
    return insert_or_find(
        session,
        lambda: ChannelIdentity(channel=channel, external_id=external_id, resident_id=resident.id),
        lambda: _identity(session, channel, external_id),
    )


def identify(session: Session, channel: str, external_id: str, phone: str | None = None) -> Resident:
    """The resident behind ``channel``/``external_id``, created on first contact.

    For SMS and voice the external id is a phone number: it is normalised to E.164
    and the resident is found through the number, so an SMS sender who later calls
    is the same resident.  ``phone`` (when a channel knows one, e.g. a Telegram
    shared contact) is linked too, merging residents if the number was known.
    """
    external_id = _external_id(channel, external_id)
    if is_phone_channel(channel) and phone is None:
        phone = external_id
    now = utcnow()
    ident = _identity(session, channel, external_id)
    if ident is None:
        resident = _resident_by_phone(session, normalize_phone(phone)) if phone else None
        created = resident is None
        if resident is None:
            resident = Resident()
            session.add(resident)
            session.flush()
        ident = _add_identity(session, channel, external_id, resident)
        if created and ident.resident_id != resident.id:
            session.delete(resident)  # another worker registered this sender first
    ident.last_seen_at = now
    resident = session.get_one(Resident, ident.resident_id)
    resident.last_seen_at = now
    if phone:
        resident = link_phone(session, channel, external_id, phone)
    return resident


def _resident_by_phone(session: Session, e164: str) -> Resident | None:
    ident = _identity(session, PHONE_IDENTITY, e164)
    return session.get(Resident, ident.resident_id) if ident else None


def link_phone(session: Session, channel: str, external_id: str, phone: str) -> Resident:
    """Record that ``channel``/``external_id`` has phone number ``phone``.

    When the number already belongs to another resident the two are the same
    person: they are merged into the older one (see :func:`merge_residents`), and
    the surviving resident is returned.
    """
    e164 = normalize_phone(phone)
    ident = _identity(session, channel, _external_id(channel, external_id))
    resident = (
        identify(session, channel, external_id)
        if ident is None
        else session.get_one(Resident, ident.resident_id)
    )
    phone_ident = _identity(session, PHONE_IDENTITY, e164)
    if phone_ident is None:
        _add_identity(session, PHONE_IDENTITY, e164, resident)
        return resident
    if phone_ident.resident_id == resident.id:
        return resident
    return merge_residents(session, resident, session.get_one(Resident, phone_ident.resident_id))


def merge_residents(session: Session, a: Resident, b: Resident, who: str = "system") -> Resident:
    """Fold the newer of ``a``/``b`` into the older; return the survivor.

    Every identity, conversation, interaction, request, hand-off and feedback row
    moves over, so no history is lost.  An SMS opt-out on either side survives
    (we must never text someone who said stop); consent given on either side
    counts, since both are now known to be the same person.  The absorbed row stays
    as a tombstone (``merged_into_id``) so stale references can be followed.
    """
    survivor, absorbed = sorted((a, b), key=lambda r: (r.created_at, r.id))
    for model in _OWNED:
        session.execute(
            update(model)
            .where(model.resident_id == absorbed.id)
            .values(resident_id=survivor.id)
            .execution_options(synchronize_session="fetch")
        )
    survivor.sms_opt_out = survivor.sms_opt_out or absorbed.sms_opt_out
    survivor.contact_consent = survivor.contact_consent or absorbed.contact_consent
    survivor.age_band = survivor.age_band or absorbed.age_band
    survivor.needs_tags = sorted(set(survivor.needs_tags) | set(absorbed.needs_tags))
    survivor.last_seen_at = max(survivor.last_seen_at, absorbed.last_seen_at)
    absorbed.merged_into_id = survivor.id
    absorbed.deleted_at = utcnow()
    session.add(audit(who, "resident.merge", f"resident:{absorbed.id}->resident:{survivor.id}"))
    session.flush()
    return survivor


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _row(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(obj, name)
        out[name] = _iso(value) if isinstance(value, datetime) else value
    return out


_EXPORT_FIELDS: dict[type, tuple[str, ...]] = {
    ChannelIdentity: ("channel", "external_id", "reachable", "created_at", "last_seen_at"),
    Conversation: ("id", "key", "channel", "status", "handed_off", "department", "created_at", "updated_at"),
    Interaction: (
        "conversation_id",
        "channel",
        "direction",
        "text",
        "label",
        "lang",
        "handled_by",
        "created_at",
    ),
    ServiceRequest: (
        "service_request_id",
        "service_code",
        "status",
        "sub_status",
        "status_notes",
        "agency_responsible",
        "description",
        "address_string",
        "lat",
        "long",
        "media_url",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "channel",
        "consent",
    ),
    Handoff: ("id", "conversation_id", "department", "reason", "summary", "status", "queued_at", "closed_at"),
    Feedback: ("conversation_id", "handoff_id", "rating", "comment", "created_at"),
}
_EXPORT_KEYS: dict[type, tuple[str, Any]] = {
    ChannelIdentity: ("identities", ChannelIdentity.created_at),
    Conversation: ("conversations", Conversation.created_at),
    Interaction: ("interactions", Interaction.created_at),
    ServiceRequest: ("service_requests", ServiceRequest.requested_datetime),
    Handoff: ("handoffs", Handoff.queued_at),
    Feedback: ("feedback", Feedback.created_at),
}


def export_resident(session: Session, resident_id: int) -> dict[str, Any]:
    """Everything we hold about a resident, JSON-serialisable ("see my data")."""
    resident = session.get(Resident, resident_id)
    if resident is None:
        raise LookupError(f"no resident {resident_id}")
    data: dict[str, Any] = {
        "resident": _row(
            resident,
            (
                "id",
                "preferred_lang",
                "contact_consent",
                "sms_opt_out",
                "age_band",
                "needs_tags",
                "created_at",
                "last_seen_at",
                "deleted_at",
            ),
        ),
    }
    for model, (key, order) in _EXPORT_KEYS.items():
        stmt = select(model).where(model.resident_id == resident_id).order_by(order, model.id)
        rows = session.scalars(stmt)
        data[key] = [_row(r, _EXPORT_FIELDS[model]) for r in rows]
    return data


def _erase_notes(session: Session, handoff_ids: list[int]) -> None:
    """Delete the internal notes of ``handoff_ids``; cut the text off old-style note audit rows.

    Old audit rows (``handoff:<id>|<text>``) become ``handoff:<id>``, as new ones are written.
    """
    if not handoff_ids:
        return
    session.execute(
        delete(HandoffNote).where(HandoffNote.handoff_id.in_(handoff_ids)).execution_options(synchronize_session=False)
    )
    for hid in handoff_ids:
        session.execute(
            update(AuditLog)
            .where(AuditLog.action == NOTE_ACTION, AuditLog.target.startswith(f"handoff:{hid}|", autoescape=True))
            .values(target=f"handoff:{hid}")
            .execution_options(synchronize_session=False)
        )


def delete_resident(session: Session, resident_id: int, who: str = "resident") -> None:
    """Erase a resident's personal data, keeping anonymous aggregates.

    Identities go (a later message from the same number starts a new resident);
    message texts, entities, request descriptions, addresses, coordinates, photos,
    hand-off summaries, feedback comments and saved dialogue states are blanked;
    agents' internal notes on the resident's hand-offs are deleted (the audit rows that
    a note was written stay; the text of notes kept there before migration 0003 is cut);
    conversation keys (which embed the phone number or chat id) are replaced.
    What stays: counts, labels, service codes, departments, dates and statuses,
    which the supervisor dashboard and the SLA report need.
    """
    resident = session.get(Resident, resident_id)
    if resident is None:
        raise LookupError(f"no resident {resident_id}")
    stmt = select(ChannelIdentity).where(ChannelIdentity.resident_id == resident_id)
    identities = list(session.scalars(stmt))
    keys = [f"{i.channel}:{i.external_id}" for i in identities]
    phones = [i.external_id for i in identities if is_phone_channel(i.channel)]
    conv_keys = list(session.scalars(select(Conversation.key).where(Conversation.resident_id == resident_id)))
    session.execute(
        delete(OtpCode).where(or_(OtpCode.identity_key.in_(keys + conv_keys), OtpCode.phone.in_(phones)))
    )
    for ident in identities:
        session.delete(ident)
    conv_ids = list(session.scalars(select(Conversation.id).where(Conversation.resident_id == resident_id)))
    blank: dict[type, dict[str, Any]] = {
        Interaction: {"text": DELETED_TEXT, "entities": []},
        ServiceRequest: {
            "description": DELETED_TEXT,
            "address_string": None,
            "lat": None,
            "long": None,
            "media_url": None,
            "reported_when": None,
            "status_notes": None,
        },
        Handoff: {"summary": DELETED_TEXT},
        CallbackTask: {"phone": "", "message": DELETED_TEXT},
        Feedback: {"comment": None},
    }
    for model, values in blank.items():
        # Also rows of the resident's conversations stored before the resident was known.
        owned = or_(model.resident_id == resident_id, model.conversation_id.in_(conv_ids))
        session.execute(
            update(model).where(owned).values(**values).execution_options(synchronize_session="fetch")
        )
    handoff_ids = list(session.scalars(select(Handoff.id).where(
        or_(Handoff.resident_id == resident_id, Handoff.conversation_id.in_(conv_ids)))))
    _erase_notes(session, handoff_ids)
    for conv in session.scalars(select(Conversation).where(Conversation.resident_id == resident_id)):
        conv.key = f"deleted:{conv.id}"
        conv.state = None
        conv.status = "deleted"
    resident.age_band = None
    resident.needs_tags = []
    resident.contact_consent = False
    resident.deleted_at = utcnow()
    session.add(audit(who, "resident.delete", f"resident:{resident_id}"))
    session.flush()
