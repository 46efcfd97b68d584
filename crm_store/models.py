"""SQLAlchemy models of the resident profile store.

Design notes (the why):

* One :class:`Resident` per person, many :class:`ChannelIdentity` rows per resident.
  A phone number is itself an identity (channel ``"phone"``), which is how a Telegram
  user who later gives their number is merged with the SMS sender of that number.
* Timestamps are aware UTC (:class:`~crm_store.timeutil.UTCDateTime`) on every backend.
* Constraint names follow a naming convention so Alembic batch mode (SQLite) can
  alter them later.
* Department codes are plain strings, not foreign keys: they are the catalog's codes,
  valid even before the ``departments`` table is seeded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy import text as sql_text
from sqlalchemy.ext.mutable import MutableList
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from crm_store.timeutil import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Priority of emergencies in the hand-off queue (the queue is ordered by priority desc).
PRIORITY_EMERGENCY = 100
DELETED_TEXT = "[deleted]"
#: Audit action recorded when an agent writes a :class:`HandoffNote` (target ``handoff:<id>``).
NOTE_ACTION = "console.note"


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and type map."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


#: The server default of a JSON list column (the message log's statements leave it to the database).
_EMPTY_LIST = sql_text("'[]'")


def _json_list() -> Any:
    """A JSON list column whose in-place changes (``.append``) are tracked."""
    return MutableList.as_mutable(JSON)


class Resident(Base):
    """A person we talk to, whatever the channel."""

    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(primary_key=True)
    preferred_lang: Mapped[str] = mapped_column(String(8), default="ko", server_default="ko")
    contact_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sms_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    age_band: Mapped[str | None] = mapped_column(String(16))
    needs_tags: Mapped[list[str]] = mapped_column(_json_list(), default=list, server_default=_EMPTY_LIST)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    # Set on the absorbed resident of a merge, so old references can be followed.
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"))


class ChannelIdentity(Base):
    """ "This channel's id is that resident": (channel, external_id) → resident.

    ``external_id`` is E.164 for phone channels.  ``reachable`` turns false when a
    channel reports the address dead (blocked bot, undeliverable number).
    """

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_channel_identities_channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), index=True)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    """One conversation per channel identity; ``state`` is the DialogueState JSON."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    state: Mapped[str | None] = mapped_column(Text)
    state_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    handed_off: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    department: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Interaction(Base):
    """One message in or out, with what the NLU made of it.

    ``message_id`` is the channel's delivery id; the unique (channel, direction,
    message_id) makes a retried webhook delivery a no-op.  Outbound rows usually
    have no delivery id (NULLs never collide).
    """

    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("channel", "direction", "message_id", name="uq_interactions_delivery"),
        CheckConstraint("direction IN ('in', 'out')", name="direction"),
        Index("ix_interactions_created_at", "created_at"),
        Index("ix_interactions_channel_created_at", "channel", "created_at"),
        Index("ix_interactions_label", "label"),
        Index("ix_interactions_conversation_id", "conversation_id"),
        Index("ix_interactions_resident_id", "resident_id"),
        # "Text contains" of the supervisor log: pg_trgm GIN on PostgreSQL (migration 0002); on
        # SQLite an empty partial index (WHERE 0), i.e. nothing, so both backends match the models.
        # Its pending list flushed in small steps (migration 0011): no 50-70 ms insert every few thousand rows.
        Index("ix_interactions_text_trgm", "text", postgresql_using="gin", postgresql_ops={"text": "gin_trgm_ops"},
              postgresql_with={"gin_pending_list_limit": 128}, sqlite_where=sql_text("0")),
        # The log's "handled by an agent" filter: the few rows not answered by the bot (migration 0002).
        Index("ix_interactions_people_created_at", "created_at", postgresql_where=sql_text("handled_by <> 'bot'"),
              sqlite_where=sql_text("handled_by <> 'bot'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"))
    channel: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(3))
    text: Mapped[str] = mapped_column(Text, default="", server_default="")
    label: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    lang: Mapped[str | None] = mapped_column(String(8))
    entities: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default=_EMPTY_LIST)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    handled_by: Mapped[str] = mapped_column(String(64), default="bot", server_default="bot")
    message_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServiceRequest(Base):
    """A 민원 in Open311 GeoReport v2 shape (field names are Open311's)."""

    __tablename__ = "service_requests"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'closed')", name="status"),
        CheckConstraint(
            "sub_status IN ('received', 'assigned', 'in_progress', 'resolved', 'rejected')", name="sub_status"
        ),
        Index("ix_service_requests_requested_datetime", "requested_datetime"),
        Index("ix_service_requests_agency_status", "agency_responsible", "status"),
        # Duplicate detection: the open requests of one service, newest first (crm_store/requests.py).
        Index("ix_service_requests_service_open", "service_code", "status", "requested_datetime"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_request_id: Mapped[str] = mapped_column(String(16), unique=True)
    service_code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(8), default="open")
    sub_status: Mapped[str] = mapped_column(String(16), default="received")
    status_notes: Mapped[str | None] = mapped_column(Text)
    agency_responsible: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    address_string: Mapped[str | None] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Float)
    long: Mapped[float | None] = mapped_column(Float)
    media_url: Mapped[str | None] = mapped_column(Text)
    reported_when: Mapped[str | None] = mapped_column(String(128))
    requested_datetime: Mapped[datetime] = mapped_column(default=utcnow)
    updated_datetime: Mapped[datetime] = mapped_column(default=utcnow)
    expected_datetime: Mapped[datetime | None]
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"))
    channel: Mapped[str] = mapped_column(String(32), default="rest")
    lang: Mapped[str] = mapped_column(String(8), default="ko")
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The address in comparable form (``road:number``, bot/geo.py): duplicates match on it without coordinates.
    address_key: Mapped[str | None] = mapped_column(String(128))
    #: Set when an agent merged this request into another (it is then closed; its reporter follows that one).
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("service_requests.id"))
    #: The resident agreed that their own words and the exact address may appear in the public
    #: Open311 feed (asked in the conversation; ``publish_consent`` of ``request_opened``).
    public_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_text("false"))

class RequestSubscription(Base):
    """A resident following a request they did not open (they reported the same problem and accepted
    the existing ticket): told of its updates on their own channel, counted on it."""

    __tablename__ = "request_subscriptions"
    __table_args__ = (UniqueConstraint("request_id", "conversation_key", name="uq_request_subscriptions_request_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    #: ``channel:sender``: where updates go (the conversation may not exist yet for REST senders).
    conversation_key: Mapped[str] = mapped_column(String(300))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RequestUpdate(Base):
    """One step in a request's history: a status change, a crew note or photo, a merge, a reopening.

    ``public`` notes (no personal data: staff write them for residents) are what the public status
    page shows; the others stay inside the office.
    """

    __tablename__ = "request_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    sub_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    media_url: Mapped[str | None] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    who: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: The crew app's id for an update made offline: a sync sent twice is applied once.
    client_id: Mapped[str | None] = mapped_column(String(64), unique=True)


class WorkOrder(Base):
    """A request handed to a field crew (an agent with role ``field``): what they see on the mobile page."""

    __tablename__ = "work_orders"
    __table_args__ = (CheckConstraint("status IN ('assigned', 'on_site', 'done', 'cancelled')", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("service_requests.id"), index=True)
    crew: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="assigned")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    before_url: Mapped[str | None] = mapped_column(Text)
    after_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketCounter(Base):
    """Last ticket sequence per year; one row locked per allocation keeps numbers gap-free."""

    __tablename__ = "ticket_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class Handoff(Base):
    """A conversation waiting for, or handled by, a person."""

    __tablename__ = "handoffs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'claimed', 'closed')", name="status"),
        Index("ix_handoffs_queue", "status", "department", "priority", "queued_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    department: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reason: Mapped[str] = mapped_column(String(255), default="", server_default="")
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(8), default="queued", server_default="queued")
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    resolution_code: Mapped[str | None] = mapped_column(String(64))


class CallbackTask(Base):
    """A call-back the resident asked for (after hours, or instead of waiting in the queue).

    One per open hand-off: the number was checked in the conversation (``phone``, stored in
    full for the agent who calls; every other view masks it and a reveal is audited),
    ``due_at`` comes from business hours, and each call attempt moves ``attempts`` and
    ``outcome`` (``reached`` closes the task, ``no_answer``/``retry`` keep it open).
    """

    __tablename__ = "callback_tasks"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'done')", name="status"),
        Index("ix_callback_tasks_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    department: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(8), default="open")
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(16))
    last_attempt_at: Mapped[datetime | None]
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HandoffNote(Base):
    """An agent's internal note on a hand-off; never shown to the resident.

    Notes used to be audit rows (``target="handoff:<id>|<text>"``), which cut them at
    255 characters and mixed content into the audit trail.  Here they have room
    (``Text``), and the audit row only records that a note was written.  A note may
    hold personal data, so erasing a resident deletes the notes of their hand-offs.
    """

    __tablename__ = "handoff_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id"), index=True)
    who: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Department(Base):
    """A department of the municipality (codes are the catalog's)."""

    __tablename__ = "departments"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_ko: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str | None] = mapped_column(String(32))


class Agent(Base):
    """A call-center person who logs into the console."""

    __tablename__ = "agents"
    __table_args__ = (CheckConstraint("role IN ('agent', 'supervisor', 'admin', 'field', 'editor')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    departments: Mapped[list[str]] = mapped_column(_json_list(), default=list)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Feedback(Base):
    """A 1–5 rating a resident gave after a conversation or hand-off."""

    __tablename__ = "feedback"
    __table_args__ = (CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id"))
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Who did what to whom: PII reveals, merges, erasures."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    who: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ConsoleSession(Base):
    """A console login: the cookie holds a random token, only its SHA-256 is kept here.

    Server-side so a session can be listed, ended at logout, on a password change or by an
    admin, and expire after :data:`bot.console.auth.IDLE_TIMEOUT_S` without use.
    """

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    client: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class OtpCode(Base):
    """A one-time code sent by SMS to prove a phone number; only its hash is kept."""

    __tablename__ = "otp_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_key: Mapped[str] = mapped_column(String(300), index=True)
    phone: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


#: Statuses of a knowledge-base article version (see :mod:`crm_store.kb`).
KB_STATUSES = ("draft", "in_review", "published", "archived")


class KbArticle(Base):
    """A knowledge-base article: its stable id and pointers to its versions.

    The content lives in :class:`KbArticleVersion` rows; the columns here are a summary of
    the newest version (titles, department, a lowercased search text) so the editor's list
    and search read one row per article, on every backend (JSON is stored ASCII-escaped on
    PostgreSQL, so searching the JSON itself for Korean would find nothing).
    """

    __tablename__ = "kb_articles"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    area: Mapped[str] = mapped_column(String(64), index=True)
    department: Mapped[str | None] = mapped_column(String(32))
    title_ko: Mapped[str] = mapped_column(String(255), default="")
    title_en: Mapped[str] = mapped_column(String(255), default="")
    search_text: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    latest_status: Mapped[str] = mapped_column(String(16), default="draft")
    published_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbArticleVersion(Base):
    """One edit of an article: the whole article as JSON, never changed afterwards except its status.

    At most one version per article is ``published`` (a partial unique index, so the database
    itself refuses a second one whatever the code does).
    """

    __tablename__ = "kb_article_versions"
    __table_args__ = (
        UniqueConstraint("article_id", "version", name="uq_kb_article_versions_article_id"),
        CheckConstraint("status IN ('draft', 'in_review', 'published', 'archived')", name="status"),
        Index("ix_kb_article_versions_one_published", "article_id", unique=True,
              postgresql_where=sql_text("status = 'published'"), sqlite_where=sql_text("status = 'published'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id"))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    author: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]


class KbState(Base):
    """The one row holding ``revision``: bumped whenever the published set changes.

    Every worker polls this (one primary-key read) and reloads the published articles when
    it moved, so an edit is live everywhere without a restart.
    """

    __tablename__ = "kb_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbLearned(Base):
    """A not-understood inbound message someone dealt with in the learning loop.

    ``action`` is ``attach`` (added to an article's questions), ``draft`` (a new article),
    ``intent`` (a classifier training example) or ``dismiss``; ``target`` the article id or
    intent.  Handled messages leave the clusters shown to supervisors.
    """

    __tablename__ = "kb_learned"

    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id", ondelete="CASCADE"),
                                                primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(120))
    who: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def audit(who: str, action: str, target: str) -> AuditLog:
    """A new audit row (add it to the session of the action it records)."""
    return AuditLog(who=who, action=action, target=target)
