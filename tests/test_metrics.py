"""``GET /metrics`` of ``pcrm serve --workers 2`` on SQLite: one scrape counts every worker's messages.

A conversation is spread over both workers (a new connection per request; ``X-PCRM-Worker``
tells which answered), with FAQ questions and a hand-off; then a scrape must show, summed over
the workers, exactly the messages sent (by channel and label), as many turn-latency and stage
observations, the hand-off by department, the queue it waits in, the SLA, spool and error series,
and refuse a scrape without the token. The workers log JSON lines (``PCRM_LOG_FORMAT=json``) and
share the models the supervisor loaded (the whole server within 900 MB of PSS).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics_http import allowed
from tests.pcrm_servers import PcrmServe

pytestmark = pytest.mark.timeout(300)

TOKEN = "metrics-test-token"
CLOSE = {"connection": "close"}
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcrmServe]:
    tmp: Path = tmp_path_factory.mktemp("metrics")
    srv = PcrmServe(tmp, f"sqlite:///{tmp / 'pcrm.db'}", None, workers=2, PCRM_METRICS_TOKEN=TOKEN,
                    PCRM_LOG_FORMAT="json")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def test_metrics_count_a_conversation_across_both_workers(server: PcrmServe) -> None:
    texts = ["쓰레기 언제 버려요?", "여권 발급 얼마나 걸려요?", "주민등록등본은 어디서 떼요?"]
    workers: Counter[str] = Counter()
    sent = 0
    for i in range(40):  # until both workers answered (the kernel spreads new connections)
        r = httpx.post(server.url + "/webhooks/rest/webhook", headers=CLOSE, timeout=30,
                       json={"sender": f"metrics-{i % 4}", "message": texts[i % len(texts)]})
        assert r.status_code == 200 and r.json(), r.text
        workers[r.headers["x-pcrm-worker"]] += 1
        sent += 1
        if len(workers) == 2 and sent >= 6:
            break
    assert len(workers) == 2, f"one worker answered everything: {dict(workers)}"
    r = httpx.post(server.url + "/webhooks/rest/webhook", headers=CLOSE, timeout=30,
                   json={"sender": "metrics-handoff", "message": "상담원 연결해 주세요"})
    assert r.status_code == 200
    sent += 1

    scrape = httpx.get(server.url + "/metrics", headers={**AUTH, **CLOSE}, timeout=30)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    found = samples(scrape.text)

    assert total(found, "pcrm_messages_total", channel="rest") == sent
    assert total(found, "pcrm_messages_total", channel="rest", label="faq.waste_schedule") >= 1
    assert total(found, "pcrm_turn_seconds_count", channel="rest") == sent
    assert total(found, "pcrm_turn_seconds_bucket", channel="rest", le="+Inf") == sent
    for stage in ("nlu", "engine", "store"):
        assert total(found, "pcrm_stage_seconds_count", stage=stage) >= sent, stage
    departments = {lab["department"] for lab, v in found.get("pcrm_handoffs_total", []) if v}
    assert departments, "the hand-off was not counted"
    queued = {lab["department"]: v for lab, v in found.get("pcrm_handoff_queue_depth", [])}
    assert any(queued.get(d, 0) >= 1 for d in departments), queued
    assert total(found, "pcrm_errors_total", kind="turn") == 0
    assert "pcrm_errors_total" in found and "pcrm_spool_messages" in found
    assert total(found, "pcrm_spool_messages") == 0
    assert total(found, "pcrm_store_up") == 1
    assert "# HELP pcrm_sla_breaches" in scrape.text


def test_metrics_refuse_a_scrape_without_the_token(server: PcrmServe) -> None:
    assert httpx.get(server.url + "/metrics", headers=CLOSE, timeout=30).status_code == 403
    wrong = {"authorization": "Bearer nope", **CLOSE}
    assert httpx.get(server.url + "/metrics", headers=wrong, timeout=30).status_code == 403


def test_without_a_token_only_loopback_clients_may_scrape() -> None:
    def req(host: str, auth: str = "") -> SimpleNamespace:
        return SimpleNamespace(client=SimpleNamespace(host=host), headers={"authorization": auth} if auth else {})

    assert allowed(req("127.0.0.1"), None)  # type: ignore[arg-type]
    assert allowed(req("::1"), None)  # type: ignore[arg-type]
    assert not allowed(req("203.0.113.9"), None)  # type: ignore[arg-type]
    assert not allowed(req("127.0.0.1"), "s3cret")  # type: ignore[arg-type]
    assert allowed(req("203.0.113.9", "Bearer s3cret"), "s3cret")  # type: ignore[arg-type]


def test_json_logs_of_the_workers_name_each_request(server: PcrmServe) -> None:
    r = httpx.post(server.url + "/webhooks/rest/webhook", headers={**CLOSE, "x-request-id": "metrics-req-7"},
                   json={"sender": "metrics-log", "message": "안녕하세요"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-request-id"] == "metrics-req-7"
    import json
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        access = [x for x in lines
                  if x.get("request_id") == "metrics-req-7" and x.get("path") == "/webhooks/rest/webhook"]
        if access:
            break
        time.sleep(0.2)
    assert access and access[0]["status"] == 200 and access[0]["method"] == "POST"
    assert all(not line.startswith("INFO:") for line in server.log().splitlines()), "a text line among JSON logs"


def _smaps(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key] = int(parts[0])
    return out


def test_workers_share_the_models_loaded_before_the_fork(server: PcrmServe) -> None:
    """Pre-fork: most of a worker's memory is the supervisor's pages, shared; the whole server
    (supervisor and two workers) stays within the issue's 900 MB of PSS after a conversation."""
    assert server.proc is not None
    for i in range(60):
        httpx.post(server.url + "/webhooks/rest/webhook", headers=CLOSE, timeout=30,
                   json={"sender": f"memory-{i % 6}", "message": "주민등록등본은 어디서 떼요?"})
    workers = server.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        m = _smaps(pid)
        private = m["Private_Clean"] + m["Private_Dirty"]
        assert private < m["Rss"] / 2, f"worker {pid}: {private} kB private of {m['Rss']} kB resident"
    pss_mb = sum(_smaps(pid)["Pss"] for pid in [server.proc.pid, *workers]) / 1024
    assert pss_mb <= 900, f"{pss_mb:.0f} MB PSS"
