"""Rate limits and the cross-worker stores, in-process and on the shared Redis.

* One flooding sender gets 429 + Retry-After on a webhook (a polite "잠시 후 다시" on the
  web chat socket) while another sender is still answered.
* Two :class:`RedisRateLimiter` (two workers) share their counts; without Redis they count
  alone.  (The message limits with Redis are counted by the admission script:
  tests/test_admission.py.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bot.ratelimit import InProcessRateLimiter, RateLimited, RedisRateLimiter
from bot.settings import ROOT, Settings
from bot.webchat_keys import new_key, protocols_for
from tests.pcrm_servers import REDIS_URL, always_open_config, need, redis_reachable

REDIS_DB = f"{REDIS_URL.rstrip('/')}/11"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from bot.app import create_app

    tmp = tmp_path_factory.mktemp("ratelimit")
    config = always_open_config(tmp, rate_limits={"per_sender_per_minute": 5, "per_channel_per_second": 1000})
    settings = Settings(database_url=f"sqlite:///{tmp / 'pcrm.db'}", redis_url=None, pcrm_config=config,
                        pcrm_model_dir=ROOT / "var" / "model", pcrm_spool_path=tmp / "spool.jsonl")
    with TestClient(create_app(settings)) as c:
        yield c


def test_a_flooding_sender_gets_429_and_others_are_still_answered(client: TestClient) -> None:
    flood, calm = f"flood-{uuid.uuid4().hex[:6]}", f"calm-{uuid.uuid4().hex[:6]}"
    codes = [client.post("/webhooks/rest/webhook", json={"sender": flood, "message": "쓰레기 언제 버려요?"})
             for _ in range(8)]
    assert [r.status_code for r in codes] == [200] * 5 + [429] * 3
    limited = codes[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["scope"] == "sender"
    ok = client.post("/webhooks/rest/webhook", json={"sender": calm, "message": "쓰레기 언제 버려요?"})
    assert ok.status_code == 200 and ok.json()


def test_the_web_chat_socket_says_try_again_later(client: TestClient) -> None:
    with client.websocket_connect("/webchat/ws", subprotocols=protocols_for(new_key())) as ws:
        texts = []
        for i in range(6):
            ws.send_json({"type": "message", "text": "여권 발급 얼마나 걸려요?", "id": f"m{i}"})
            while True:
                frame = ws.receive_json()
                if frame["type"] == "bot" and frame.get("reply_to") == f"m{i}":
                    texts.append(frame)
                    break
        assert texts[-1]["hints"].get("rate_limited") is True
        assert "잠시 후 다시" in texts[-1]["text"]
        assert not texts[0]["hints"].get("rate_limited")


def test_in_process_limits_per_sender_and_per_channel() -> None:
    rl = InProcessRateLimiter(per_sender_per_minute=3, per_channel_per_second=4)
    now = 1000.0
    for _ in range(3):
        rl.check("sms", "+821011112222", now)
    with pytest.raises(RateLimited) as exc:
        rl.check("sms", "+821011112222", now)
    assert exc.value.scope == "sender" and exc.value.retry_after == 20  # the minute ends at 1020
    with pytest.raises(RateLimited) as exc:  # fifth message of the channel in this second
        rl.check("sms", "+821033334444", now)
    assert exc.value.scope == "channel"
    rl.check("sms", "+821033334444", now + 1)  # next second, another sender: fine
    rl.check("sms", "+821011112222", now + 60)  # next minute: fine again


@pytest.fixture
def redis_db() -> Iterator[tuple[str, str]]:
    reason = redis_reachable(REDIS_DB)
    need(reason is None, reason or "")
    import redis

    prefix = f"pcrm-test-{uuid.uuid4().hex[:8]}:"
    yield REDIS_DB, prefix
    r = redis.Redis.from_url(REDIS_DB)
    keys = list(r.scan_iter(prefix + "*"))
    if keys:
        r.delete(*keys)


def test_two_workers_share_their_counts_in_redis(redis_db: tuple[str, str]) -> None:
    url, prefix = redis_db
    a = RedisRateLimiter(url, per_sender_per_minute=4, prefix=prefix)
    b = RedisRateLimiter(url, per_sender_per_minute=4, prefix=prefix)
    now = time.time()
    now -= now % 60 - 1  # well inside one minute
    a.check("rest", "x", now)
    b.check("rest", "x", now)
    a.check("rest", "x", now)
    b.check("rest", "x", now)
    with pytest.raises(RateLimited):
        a.check("rest", "x", now)
    down = RedisRateLimiter("redis://127.0.0.1:1/0", per_sender_per_minute=1, prefix=prefix)
    down.check("rest", "y", now)  # Redis unreachable: counted in-process, still limited
    with pytest.raises(RateLimited):
        down.check("rest", "y", now)


def test_both_limits_are_shared_and_ordered(redis_db: tuple[str, str]) -> None:
    """With both limits set, the channel is counted, then (only within it) the sender."""
    url, prefix = redis_db
    a = RedisRateLimiter(url, per_sender_per_minute=3, per_channel_per_second=4, prefix=prefix)
    b = RedisRateLimiter(url, per_sender_per_minute=3, per_channel_per_second=4, prefix=prefix)
    now = time.time()
    now -= now % 60 - 1.5  # well inside one minute and one second
    a.check("rest", "x", now)
    b.check("rest", "x", now)
    a.check("rest", "x", now)
    with pytest.raises(RateLimited) as sender:
        b.check("rest", "x", now)  # the sender's 4th in the minute
    assert sender.value.scope == "sender"
    with pytest.raises(RateLimited) as channel:
        a.check("rest", "y", now)  # the channel's 5th in the second: y is not counted
    assert channel.value.scope == "channel"
    a.check("rest", "y", now + 1)  # next second: the channel is free again, y's first message
    a.check("rest", "y", now + 1)
    a.check("rest", "y", now + 1)
    with pytest.raises(RateLimited):
        b.check("rest", "y", now + 1)
    down = RedisRateLimiter("redis://127.0.0.1:1/0", per_sender_per_minute=1, per_channel_per_second=10,
                            prefix=prefix)
    down.check("rest", "z", now)  # Redis unreachable: counted in-process, still limited
    with pytest.raises(RateLimited):
        down.check("rest", "z", now)
