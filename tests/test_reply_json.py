"""A reply keeps every field through the dedup store's JSON, so a retried delivery gets the same answer."""

from __future__ import annotations

from dataclasses import asdict, fields

from bot.dedup import replies_from_json, replies_to_json
from bot.messages import Button, Reply


def test_a_reply_round_trips_through_the_dedup_json_with_buttons_and_hints() -> None:
    reply = Reply("접수되었습니다.", buttons=[Button("예", "/affirm"), Button("No", "/deny")],
                  hints={"link": "https://example.org/s/1", "emergency": True, "nested": {"a": [1, 2]}})
    assert reply.to_dict() == asdict(reply)
    assert replies_from_json(replies_to_json([reply, Reply("두 번째")])) == [reply, Reply("두 번째")]


def test_to_dict_names_every_field_of_a_reply() -> None:
    """``to_dict`` lists the fields by hand (for speed): a field added to ``Reply`` must be added there."""
    assert set(Reply("x").to_dict()) == {f.name for f in fields(Reply)}
    assert set(Reply("x", buttons=[Button("t", "p")]).to_dict()["buttons"][0]) == {f.name for f in fields(Button)}
