"""Traces and JSON logs (bot/telemetry.py).

* With an OTLP endpoint configured, one REST message is exported as a trace: the HTTP request's
  span, the inbox under it, the engine and the store under the inbox, NLU under the engine —
  received by a real OTLP/HTTP endpoint (a loopback server decoding the protobuf).
* Without one, no tracer provider or exporter is ever loaded.
* JSON log lines carry the request id and the conversation ref, with personal data masked.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from bot import telemetry
from bot.logging_setup import PiiMaskingFilter
from bot.settings import ROOT, Settings


class _Collector(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's protocol
        n = int(self.headers.get("content-length", "0"))
        type(self).bodies.append(self.rfile.read(n))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.bodies = []
    httpd = HTTPServer(("127.0.0.1", 0), _Collector)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _spans() -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in _Collector.bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                out.extend(ss.spans)
    return out


def test_a_turn_is_traced_from_the_channel_through_inbox_and_engine_to_the_store(
        collector: str, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from bot.app import create_app

    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'pcrm.db'}", redis_url=None,
                        pcrm_config=tmp_path / "config.yml", pcrm_model_dir=ROOT / "var" / "model",
                        otel_exporter_otlp_endpoint=collector, otel_service_name="pcrm-test")
    try:
        app = create_app(settings)
        with TestClient(app) as client:
            r = client.post("/webhooks/rest/webhook", json={"sender": "trace-me", "message": "쓰레기 언제 버려요?"},
                            headers={"x-request-id": "req-trace-1"})
            assert r.status_code == 200 and r.json()
            assert r.headers["x-request-id"] == "req-trace-1"
        telemetry.flush_tracing()
    finally:
        telemetry.TRACER = None  # the other tests in this process run untraced
    spans = _spans()
    parent = {s.span_id: s.parent_span_id for s in spans}
    by_name = {s.name: s for s in spans if s.name != "nlu" or s.parent_span_id}  # not the start-up warm-up
    request = next(s for s in spans if s.name == "POST /webhooks/rest/webhook" and not s.parent_span_id)

    def ancestors(span_id: bytes) -> list[bytes]:
        out = []
        while parent.get(span_id):
            span_id = parent[span_id]
            out.append(span_id)
        return out

    assert {"inbox", "engine", "nlu", "store"} <= set(by_name), sorted(by_name)
    assert request.span_id in ancestors(by_name["inbox"].span_id)  # channel (HTTP request) -> inbox
    assert by_name["engine"].parent_span_id == by_name["inbox"].span_id
    assert by_name["nlu"].parent_span_id == by_name["engine"].span_id
    stores = [s for s in spans if s.name == "store"]
    assert len(stores) == 2 and all(s.parent_span_id == by_name["inbox"].span_id for s in stores)
    assert len({s.trace_id for s in (request, *stores, by_name["nlu"])}) == 1


def test_without_an_endpoint_no_tracer_or_exporter_is_loaded() -> None:
    # (FastAPI and redis import parts of opentelemetry when it is installed; no provider, no exporter.)
    code = ("import sys; import bot.app, bot.inbox, bot.engine; from bot import telemetry;"
            "assert telemetry.setup_tracing(None) is False and telemetry.TRACER is None;"
            "print([m for m in sys.modules if m.startswith(('opentelemetry.exporter', 'opentelemetry.sdk.trace'))])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_json_log_lines_carry_the_request_and_conversation_ids_with_personal_data_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(telemetry.JsonFormatter())
    handler.addFilter(PiiMaskingFilter())
    logger = logging.getLogger("pcrm.test.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    rid = telemetry.REQUEST_ID.set("req-42")
    conv = telemetry.CONVERSATION.set(telemetry.conversation_ref("twilio_sms:+821012345678"))
    try:
        logger.warning("callback to %s failed", "010-1234-5678")
    finally:
        telemetry.REQUEST_ID.reset(rid)
        telemetry.CONVERSATION.reset(conv)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip())
    assert line["request_id"] == "req-42"
    assert line["conversation"] == telemetry.conversation_ref("twilio_sms:+821012345678")
    assert "1234-5678" not in line["msg"] and "callback to" in line["msg"]
    assert "821012345678" not in line["conversation"]
    assert line["level"] == "warning" and line["logger"] == "pcrm.test.jsonlog"
