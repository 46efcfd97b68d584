"""The one writer of channel events (:mod:`bot.ports`), and the reads they decide.

Adapters used to write their own rows through the ORM (the SMS channel its opt-outs and
delivery reports, the voice channel its call statuses, Telegram its reachability), so
what "opted out" meant was spread over three channel modules. Now an adapter reports a
channel-neutral event to the inbox (``ChannelPort.note``), and this module alone says
what each event leaves in the store:

* :class:`~bot.ports.ContactKeyword` — the keyword and its answer on the resident's
  timeline (``handled_by="system"``, label ``sms.<keyword>``); ``stop``/``start`` set or clear
  ``Resident.sms_opt_out``, audited. A retried delivery changes nothing.
* :class:`~bot.ports.DeliveryStatus` — an audit row per (delivery id, status, error), once
  (outbound rows carry no delivery id to attach it to; no address, so nothing to erase);
  ``opted_out`` sets the recipient's opt-out, ``unreachable`` marks the identity dead.
* :class:`~bot.ports.CallStatus` — a system interaction of the caller's conversation
  (``[call-status] completed (42s)``, label ``call.status``), next to the call's transcript.
* :class:`~bot.ports.Reachability` — the identity's ``reachable`` flag.

:func:`may_contact` reads what those events wrote: whether the centre may start a message.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.messages import Message
from bot.phones import PHONE_IDENTITY, is_phone_channel, normalize_phone
from bot.ports import CallStatus, ChannelEvent, ContactKeyword, DeliveryStatus, Reachability
from crm_store import conversations, message_log, residents
from crm_store.models import AuditLog, ChannelIdentity, Conversation, Interaction, Resident, audit


def record(session: Session, event: ChannelEvent) -> None:
    """Write ``event`` in the caller's transaction."""
    if isinstance(event, ContactKeyword):
        _keyword(session, event)
    elif isinstance(event, DeliveryStatus):
        _delivery(session, event)
    elif isinstance(event, CallStatus):
        _call_status(session, event)
    elif isinstance(event, Reachability):
        session.execute(update(ChannelIdentity)
                        .where(ChannelIdentity.channel == event.channel,
                               ChannelIdentity.external_id == event.sender_id,
                               ChannelIdentity.reachable.is_(not event.reachable))
                        .values(reachable=event.reachable).execution_options(synchronize_session=False))
    else:  # pragma: no cover - a new event type without a writer is a programming error
        raise TypeError(f"no writer for {type(event).__name__}")


def _keyword(session: Session, event: ContactKeyword) -> None:
    msg = event.message
    resident = residents.identify(session, msg.channel, msg.sender_id)
    conv = conversations.get_or_create(session, msg.conversation_key, msg.channel, resident)
    label = f"sms.{event.keyword}"
    if message_log.insert_inbound(session, msg, conv.id, resident.id, label=label, handled_by="system") is None:
        return  # a retried delivery: done the first time
    if event.keyword in ("stop", "start"):
        resident.sms_opt_out = event.keyword == "stop"
        session.add(audit("resident", "sms.opt_out" if event.keyword == "stop" else "sms.opt_in",
                          f"resident:{resident.id}"))
    session.add(Interaction(conversation_id=conv.id, resident_id=resident.id, channel=msg.channel,
                            direction="out", text=event.reply, lang=msg.lang, label=label,
                            entities=[], handled_by="system"))


def _delivery(session: Session, event: DeliveryStatus) -> None:
    action = f"sms.status.{event.status}"[:64]
    target = f"sms:{event.delivery_id}" + (f" error:{event.error}" if event.error else "")
    exists = session.scalars(select(AuditLog.id).where(AuditLog.action == action, AuditLog.target == target)).first()
    if exists is not None:
        return
    session.add(AuditLog(who=event.reported_by, action=action, target=target[:255]))
    if event.outcome == "ok" or not event.recipient:
        return
    try:
        address = normalize_phone(event.recipient) if is_phone_channel(event.channel) else event.recipient
    except ValueError:
        return
    if event.outcome == "opted_out":
        resident = residents.identify(session, event.channel, address)
        resident.sms_opt_out = True
        session.add(audit(event.reported_by, "sms.opt_out", f"resident:{resident.id}"))
    elif event.outcome == "unreachable":
        ident = session.scalars(select(ChannelIdentity).where(ChannelIdentity.channel == event.channel,
                                                              ChannelIdentity.external_id == address)).first()
        if ident is not None:
            ident.reachable = False


def _call_status(session: Session, event: CallStatus) -> None:
    text = f"[call-status] {event.status}" + (f" ({event.duration_s}s)" if event.duration_s else "")
    msg = Message(channel=event.channel, sender_id=event.sender_id, text=text,
                  message_id=f"{event.call_id}:status:{event.status}"[:128])
    resident = residents.identify(session, event.channel, event.sender_id)
    conv = conversations.get_or_create(session, msg.conversation_key, event.channel, resident)
    message_log.insert_inbound(session, msg, conv.id, resident.id, label="call.status", handled_by="system")


def may_contact(session: Session, channel: str, recipient_id: str) -> bool:
    """Whether the centre may start a message on ``channel`` to ``recipient_id``: not when this
    channel's identity is known unreachable, nor, on a phone channel, when the number's resident
    opted out of SMS (through any identity of the number, and through merges)."""
    phone = is_phone_channel(channel)
    if phone:
        try:
            recipient_id = normalize_phone(recipient_id)
        except ValueError:
            return False
        wanted = [PHONE_IDENTITY, "twilio_sms", "twilio_voice", channel]
    else:
        wanted = [channel]
    stmt = select(ChannelIdentity).where(ChannelIdentity.external_id == recipient_id,
                                         ChannelIdentity.channel.in_(wanted))
    for ident in session.scalars(stmt):
        if ident.channel == channel and not ident.reachable:
            return False
        if not phone:
            continue
        resident = session.get(Resident, ident.resident_id)
        seen = set()
        while resident is not None and resident.merged_into_id and resident.id not in seen:
            seen.add(resident.id)
            resident = session.get(Resident, resident.merged_into_id)
        if phone and resident is not None and resident.sms_opt_out:
            return False
    return True


def history(session: Session, conversation_key: str, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` interactions of a conversation, oldest first, as a widget redraws them."""
    conv_id = session.scalars(select(Conversation.id).where(Conversation.key == conversation_key)).one_or_none()
    if conv_id is None:
        return []
    rows = session.scalars(select(Interaction).where(Interaction.conversation_id == conv_id)
                           .order_by(Interaction.created_at.desc(), Interaction.id.desc()).limit(limit)).all()
    out = []
    for row in reversed(rows):
        if row.direction == "in":
            author = "resident"
        elif (row.handled_by or "").startswith("agent"):
            author = "agent"
        else:
            author = "bot"
        out.append({"direction": row.direction, "author": author, "text": row.text or "",
                    "created_at": row.created_at.isoformat() if row.created_at else None})
    return out
