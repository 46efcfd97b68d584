"""The agent queue: emergencies first, oldest first; one agent per claim; closing frees the bot."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from bot.dialogue.state import DialogueState
from crm_store import conversations, handoffs, residents
from crm_store.models import PRIORITY_EMERGENCY, Agent, Conversation, Resident


def _conv(s: Session, sender: str) -> tuple[Conversation, Resident]:
    r = residents.identify(s, "webchat", sender)
    return conversations.get_or_create(s, f"webchat:{sender}", "webchat", r), r


def test_queue_order_claim_and_close(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as s:
        agents = [Agent(username=f"a{i}", password_hash="x", departments=["general"]) for i in range(2)]
        s.add_all(agents)
        c1, r1 = _conv(s, "one")
        c2, r2 = _conv(s, "two")
        c3, r3 = _conv(s, "three")
        c4, r4 = _conv(s, "four")
        old = handoffs.open_handoff(s, c1, r1, "general", 0, "asked", "oldest normal")
        old.queued_at -= timedelta(minutes=5)
        new = handoffs.open_handoff(s, c2, r2, "general", 0, "asked", "newer normal")
        emerg = handoffs.open_handoff(s, c3, r3, "safety", PRIORITY_EMERGENCY, "emergency", "gas smell")
        handoffs.open_handoff(s, c4, r4, "tax", 0, "asked", "other dept")
        again = handoffs.open_handoff(s, c1, r1, "general", 10, "asked", "again")
        assert again.id == old.id and again.priority == 10
        c1.state = DialogueState(key=c1.key, handed_off=True, handoff_department="general").to_json()
        a0, a1 = agents[0].id, agents[1].id

    with session_factory.begin() as s:
        q = handoffs.queue(s, ["general", "safety"])
        assert [h.id for h in q] == [emerg.id, old.id, new.id]
        assert len(handoffs.queue(s, None)) == 4

        claimed = handoffs.claim(s, old.id, a0)
        assert claimed is not None and claimed.agent_id == a0 and claimed.claimed_at is not None
        assert handoffs.claim(s, old.id, a1) is None  # too late
        assert [h.id for h in handoffs.queue(s, ["general"])] == [new.id]

        closed = handoffs.close(s, old.id, "answered")
        assert closed.status == "closed" and closed.closed_at is not None
        conv = s.get_one(Conversation, c1.id)
        assert not conv.handed_off
        # The dialogue state is the inbox's to rewrite (Inbox.release: under the lock, through the state
        # store and its Redis cache), not the hand-off store's.
        assert conv.state is not None and DialogueState.from_json(conv.state).handed_off is True
