"""The supervisor's SQL analytics give the same numbers on SQLite and PostgreSQL.

A small known history is written (two agents, three hand-offs, ratings, a transfer, messages on
two channels over two local days) and every aggregate is checked against counts made by hand:
per-agent handled/AHT/CSAT/transfers, SLA met per department, the wallboard's queue and load,
and the drill-down lists behind the numbers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from crm_store import analytics_sql as A
from crm_store.models import Agent, AuditLog, Conversation, Feedback, Handoff, Interaction
from crm_store.timeutil import utcnow

TZ = ZoneInfo("Asia/Seoul")
SLA = {"emergency": 120, "default": 900}


def seed(sessions: sessionmaker[Session]) -> dict[str, Any]:
    now = utcnow()
    with sessions.begin() as s:
        a1 = Agent(username="a1", password_hash="x", role="agent", departments=["waste"], display_name="김청소")
        a2 = Agent(username="a2", password_hash="x", role="agent", departments=["roads"], display_name="박도로")
        s.add_all([a1, a2])
        c1 = Conversation(key="webchat:1", channel="webchat")
        c2 = Conversation(key="kakao:2", channel="kakao")
        c3 = Conversation(key="kakao:3", channel="kakao")
        s.add_all([c1, c2, c3])
        s.flush()
        for conv, n in ((c1, 3), (c2, 2), (c3, 1)):
            for i in range(n):
                s.add(Interaction(conversation_id=conv.id, channel=conv.channel, direction="in", text=f"m{i}",
                                  entities=[], created_at=now - timedelta(minutes=10 + i)))
                s.add(Interaction(conversation_id=conv.id, channel=conv.channel, direction="out", text="a",
                                  entities=[], created_at=now - timedelta(minutes=10 + i)))
        # closed by a1: waited 60 s (within SLA), handled 600 s; closed by a1: waited 1200 s, handled 300 s
        h1 = Handoff(conversation_id=c1.id, department="waste", priority=10, status="closed", agent_id=a1.id,
                     queued_at=now - timedelta(hours=1), claimed_at=now - timedelta(hours=1) + timedelta(seconds=60),
                     closed_at=now - timedelta(hours=1) + timedelta(seconds=660), resolution_code="answered")
        h2 = Handoff(conversation_id=c2.id, department="waste", priority=10, status="closed", agent_id=a1.id,
                     queued_at=now - timedelta(hours=2), claimed_at=now - timedelta(hours=2) + timedelta(seconds=1200),
                     closed_at=now - timedelta(hours=2) + timedelta(seconds=1500), resolution_code="answered")
        # queued emergency, waiting 5 minutes (past its 2-minute target); one claimed by a2
        h3 = Handoff(conversation_id=c3.id, department="safety", priority=100, status="queued",
                     queued_at=now - timedelta(minutes=5))
        h4 = Handoff(conversation_id=c3.id, department="roads", priority=10, status="claimed", agent_id=a2.id,
                     queued_at=now - timedelta(minutes=3), claimed_at=now - timedelta(minutes=2))
        s.add_all([h1, h2, h3, h4])
        s.flush()
        s.add_all([Feedback(conversation_id=c1.id, handoff_id=h1.id, rating=5),
                   Feedback(conversation_id=c2.id, handoff_id=h2.id, rating=3)])
        s.add(AuditLog(who="a1", action="console.transfer", target=f"handoff:{h2.id}|waste->roads|x"))
        return {"a1": a1.id, "a2": a2.id, "h1": h1.id, "h2": h2.id, "c2": c2.id, "c3": c3.id}


def test_aggregates_match_a_known_history(session_factory: sessionmaker[Session]) -> None:
    ids = seed(session_factory)
    period = A.Period.preset("7d", TZ)
    with session_factory() as s:
        ov = A.overview(s, period)
        assert (ov["messages"], ov["conversations"], ov["handoffs"], ov["emergencies"]) == (6, 3, 4, 1)
        assert ov["csat"] == 4.0 and ov["ratings"] == 2

        agents = {a["agent_id"]: a for a in A.by_agent(s, period)}
        a1 = agents[ids["a1"]]
        assert (a1["handled"], a1["aht_s"], a1["csat"], a1["transfers"], a1["name"]) == (2, 450.0, 4.0, 1, "김청소")
        assert agents[ids["a2"]]["handled"] == 0  # a claimed hand-off is not handled yet

        depts = {d["department"]: d for d in A.by_department(s, period, SLA)}
        assert depts["waste"]["handoffs"] == 2 and depts["waste"]["sla_met_pct"] == 50.0
        assert depts["waste"]["avg_wait_s"] == 630.0

        channels = {}
        for r in A.by_day(s, period):
            channels[r["channel"]] = channels.get(r["channel"], 0) + r["messages"]
        assert channels == {"webchat": 3, "kakao": 3}

        wb = A.wallboard(s, SLA)
        safety = next(d for d in wb["departments"] if d["department"] == "safety")
        assert safety["queued"] == 1 and safety["sla_breached"] == 1 and safety["emergencies"] == 1
        assert 280 <= safety["longest_wait_s"] <= 400
        assert {a["agent_id"]: a["load"] for a in wb["agents"]} == {ids["a1"]: 0, ids["a2"]: 1}

        by_agent = A.drill(s, period, agent_id=ids["a1"])
        assert sorted(r["handoff_id"] for r in by_agent) == sorted([ids["h1"], ids["h2"]])
        assert len(A.drill(s, period, handoffs=True)) == 4  # the overview's hand-off count, drilled
        kakao = A.drill(s, period, channel="kakao")
        assert sorted(r["conversation_id"] for r in kakao) == sorted([ids["c2"], ids["c3"]])
        today = utcnow().astimezone(TZ).strftime("%Y-%m-%d")
        assert len(A.drill(s, A.Period.preset("today", TZ), day=today)) in (0, 3)  # 3 unless before 00:10 KST
