"""Agent assist, computed locally (no cloud model): a paragraph about the conversation so far and
answers agents gave in similar, resolved conversations.

Similarity is the overlap of character bigrams (Korean has no spaces to rely on: "쓰레기가" and
"쓰레기를" share "쓰레", "레기"), weighted by how rare a bigram is among the candidates, over the
resident's own words only.  Candidates are the most recent resolved hand-offs that have an agent
reply; the reply that followed the most similar resident words is suggested, without any score.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.masking import mask_pii
from crm_store.models import Handoff, Interaction

#: How many recently resolved hand-offs are compared (bounded: this runs on every page view).
CANDIDATES = 300
_WORD = re.compile(r"[0-9A-Za-z가-힣]+")


def _bigrams(text: str) -> set[str]:
    out: set[str] = set()
    for w in _WORD.findall(text.lower()):
        if len(w) == 1:
            out.add(w)
        out.update(w[i:i + 2] for i in range(len(w) - 1))
    return out


def similar_replies(s: Session, conversation_id: int, resident_text: str, limit: int = 2) -> list[dict[str, str]]:
    """Agent replies from resolved conversations whose resident wrote most like ``resident_text``."""
    query = _bigrams(resident_text)
    if not query:
        return []
    closed = list(s.scalars(select(Handoff.conversation_id).where(
        Handoff.status == "closed", Handoff.resolution_code.in_(("answered", "request_opened", "referred",
                                                                 "callback_done")),
        Handoff.conversation_id != conversation_id).order_by(Handoff.id.desc()).limit(CANDIDATES)))
    if not closed:
        return []
    rows = s.execute(select(Interaction.conversation_id, Interaction.direction, Interaction.text,
                            Interaction.handled_by)
                     .where(Interaction.conversation_id.in_(closed)).order_by(Interaction.id))
    said: dict[int, list[str]] = {}
    answer: dict[int, str] = {}
    for cid, direction, text, handled_by in rows:
        if direction == "in":
            said.setdefault(cid, []).append(text or "")
        elif (handled_by or "").startswith("agent:") and cid not in answer and (text or "").strip():
            answer[cid] = text
    docs = {cid: _bigrams(" ".join(said.get(cid, []))) for cid in answer}
    df = Counter(g for grams in docs.values() for g in grams)
    n = len(docs) or 1
    scored = []
    for cid, grams in docs.items():
        common = query & grams
        if not common:
            continue
        score = sum(math.log(1 + n / df[g]) for g in common) / math.sqrt(len(grams) + 1)
        scored.append((score, cid))
    scored.sort(reverse=True)
    out: list[dict[str, str]] = []
    for _score, cid in scored:
        text = mask_pii(answer[cid])
        if any(o["text"] == text for o in out):
            continue
        out.append({"title": "비슷한 상담의 답변", "text": text, "from_conversation": str(cid)})
        if len(out) == limit:
            break
    return out


def paragraph(data: dict[str, Any]) -> str:
    """The conversation so far in a few Korean sentences, from what the detail view already holds."""
    h, conv, res = data["handoff"], data["conversation"], data.get("resident")
    mine = [m for m in data["timeline"] if m["this_conversation"]]
    said = [m for m in mine if m["author"] == "resident" and m["text"] and not m["text"].startswith("(")]
    topics: list[str] = []
    for m in mine:
        if m.get("label_name") and m["label_name"] not in topics:
            topics.append(m["label_name"])
    parts = [f"주민이 {conv['channel_name']}(으)로 메시지 {len(said)}개를 보냈어요."]
    if said:
        parts.append(f"처음에 \u201c{said[0]['text'][:80]}\u201d라고 했고")
        parts[-1] += (f", 마지막으로 \u201c{said[-1]['text'][:80]}\u201d라고 했어요." if len(said) > 1 else "요.")
    if topics:
        parts.append(f"챗봇이 알아들은 주제는 {', '.join(topics[:3])}이에요.")
    parts.append(f"상담원 연결 사유는 \u2018{h['reason_name']}\u2019예요.")
    cb = data.get("callback")
    if cb:
        parts.append(f"회신 전화를 원해 번호를 남겼고 기한은 {cb['due_local']}이에요." if cb["has_phone"]
                     else "회신 전화를 원했지만 번호는 아직 없어요.")
    current = [r for r in data.get("requests", []) if r.get("this_conversation")]
    for r in current[:2]:
        parts.append(f"이 대화에서 {r['service_name']} 민원({r['ticket']})이 접수되어 "
                     f"지금 \u2018{r['status_name']}\u2019 상태예요.")
    if data.get("transfer"):
        parts.append(f"이관되어 왔어요: {data['transfer']['text'].removeprefix('[이관] ')}.")
    if res and res.get("lang") and res["lang"] != "ko":
        parts.append(f"주민은 {res['lang_name']}로 쓰고 있어요.")
    return " ".join(parts)
