"""Work orders: a request handed to a field crew, and what the crew's updates do to it.

The crew's mobile page (bot/field.py) works offline and syncs a queue of updates later, so
:func:`apply_update` is idempotent by the update's ``client_id``: a sync retried after a dropped
connection changes nothing twice. Each update becomes a step of the request's history
(``request_updates``); ``done`` resolves the request with the crew's note as its public status note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crm_store.models import RequestSubscription, RequestUpdate, ServiceRequest, WorkOrder
from crm_store.timeutil import utcnow

CREW_STATUSES = ("assigned", "on_site", "done")
#: A crew's status → the request's sub-status.
_SUB_STATUS = {"assigned": "assigned", "on_site": "in_progress", "done": "resolved"}


@dataclass
class Applied:
    """What one synced update did: ``notify`` lists the conversation keys to tell (reporter first)."""

    client_id: str
    ok: bool
    ticket: str | None = None
    status: str | None = None
    duplicate: bool = False
    notify: list[str] | None = None
    error: str | None = None


def assign(sessions: sessionmaker[Session], ticket: str, crew: str, priority: int = 0, who: str = "system"
           ) -> WorkOrder | None:
    """Hand ``ticket`` to ``crew`` (the request becomes ``assigned``); None for an unknown ticket."""
    with sessions.begin() as s:
        req = s.scalars(select(ServiceRequest).where(ServiceRequest.service_request_id == ticket)).one_or_none()
        if req is None:
            return None
        order = WorkOrder(request_id=req.id, crew=crew, priority=priority)
        s.add(order)
        if req.sub_status == "received":
            req.sub_status = "assigned"
            req.updated_datetime = utcnow()
        s.add(RequestUpdate(request_id=req.id, kind="assigned", sub_status=req.sub_status, who=who))
        s.flush()
        s.expunge(order)
        return order


def crew_orders(sessions: sessionmaker[Session], crew: str) -> list[dict[str, Any]]:
    """The crew's open work orders with their requests (staff may see the address and the words)."""
    with sessions() as s:
        rows = s.execute(select(WorkOrder, ServiceRequest)
                         .join(ServiceRequest, ServiceRequest.id == WorkOrder.request_id)
                         .where(WorkOrder.crew == crew, WorkOrder.status.in_(("assigned", "on_site")))
                         .order_by(WorkOrder.priority.desc(), WorkOrder.id)).all()
        return [{"id": o.id, "ticket": r.service_request_id, "service_code": r.service_code, "status": o.status,
                 "priority": o.priority, "address": r.address_string, "lat": r.lat, "long": r.long,
                 "description": r.description, "has_before": bool(o.before_url), "has_after": bool(o.after_url)}
                for o, r in rows]


def recipients(session: Session, req: ServiceRequest) -> list[str]:
    """Conversation keys told of a request's updates: its reporter, then its subscribers."""
    from crm_store.models import Conversation

    keys = []
    if req.conversation_id is not None:
        conv = session.get(Conversation, req.conversation_id)
        if conv is not None:
            keys.append(conv.key)
    keys += [k for k in session.scalars(select(RequestSubscription.conversation_key)
                                        .where(RequestSubscription.request_id == req.id)
                                        .order_by(RequestSubscription.id)) if k not in keys]
    return keys


def apply_update(sessions: sessionmaker[Session], crew: str, update: dict[str, Any]) -> Applied:
    """Apply one queued update from the crew app: ``{client_id, order_id, status?, note?, photo_kind?,
    photo_url?}``. Unknown orders, other crews' orders and bad statuses are refused, not raised."""
    client_id = str(update.get("client_id") or "")[:64]
    if not client_id:
        return Applied(client_id, False, error="client_id missing")
    status = update.get("status")
    if status is not None and status not in CREW_STATUSES:
        return Applied(client_id, False, error=f"status must be one of {list(CREW_STATUSES)}")
    try:
        with sessions.begin() as s:
            if s.scalar(select(RequestUpdate.id).where(RequestUpdate.client_id == client_id)) is not None:
                return Applied(client_id, True, duplicate=True)
            order = s.get(WorkOrder, int(update.get("order_id") or 0))
            if order is None or order.crew != crew:
                return Applied(client_id, False, error="no such work order for this crew")
            req = s.get_one(ServiceRequest, order.request_id)
            now = utcnow()
            note = (str(update.get("note") or "").strip() or None)
            note = note[:1000] if note else None
            kind = update.get("photo_kind")
            url = update.get("photo_url")
            if kind == "before" and url:
                order.before_url = url
            elif kind == "after" and url:
                order.after_url = url
            notify: list[str] = []
            if status is not None and status != order.status:
                order.status = status
                sub = _SUB_STATUS[status]
                req.sub_status = sub
                req.status = "closed" if sub == "resolved" else "open"
                if note:
                    req.status_notes = note
                if status in ("on_site", "done"):
                    notify = recipients(s, req)
            order.updated_at = req.updated_datetime = now
            s.add(RequestUpdate(request_id=req.id, kind="crew", sub_status=req.sub_status if status else None,
                                note=note, media_url=url if kind in ("before", "after") else None,
                                public=bool(note) and status is not None, who=crew, client_id=client_id,
                                created_at=now))
            return Applied(client_id, True, ticket=req.service_request_id, status=order.status, notify=notify)
    except IntegrityError:  # the same client_id synced twice at once: the other one won
        return Applied(client_id, True, duplicate=True)


def media_departments(sessions: Any, name: str) -> set[str]:
    """The departments of the requests a stored photo belongs to (the resident's report or a crew
    update): who may see it. Empty when no request refers to it yet."""
    from sqlalchemy import select

    from crm_store.models import RequestUpdate, ServiceRequest

    tail = f"%/field/media/{name}"
    with sessions() as s:
        direct = s.scalars(select(ServiceRequest.agency_responsible).where(ServiceRequest.media_url.like(tail)))
        via = s.scalars(select(ServiceRequest.agency_responsible)
                        .join(RequestUpdate, RequestUpdate.request_id == ServiceRequest.id)
                        .where(RequestUpdate.media_url.like(tail)))
        return set(direct) | set(via)
