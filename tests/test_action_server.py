"""Our actions behind a real rasa_sdk action server (``python -m rasa_sdk --actions actions``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from bot.settings import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def action_server(tmp_path_factory):
    port = _free_port()
    db = tmp_path_factory.mktemp("actions") / "db.sqlite"
    from crm_store.db import upgrade

    upgrade(f"sqlite:///{db}")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rasa_sdk", "--actions", "actions", "-p", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("rasa_sdk action server did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _call(url: str, action: str, slots: dict, intent: str = "", timeout: float = 30) -> dict:
    tracker = {"sender_id": "rest:alice", "slots": slots, "latest_message": {"text": "", "intent": {"name": intent}},
               "events": [], "paused": False, "followup_action": None, "active_loop": {}, "latest_action_name": None}
    r = httpx.post(url + "/webhook", json={"next_action": action, "sender_id": "rest:alice", "tracker": tracker,
                                           "domain": {}, "version": "3.6.21"}, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def test_action_server_lists_our_actions(action_server):
    names = {a["name"] for a in httpx.get(action_server + "/actions", timeout=10).json()}
    assert {"action_answer_faq", "action_open_service_request", "action_check_status", "action_handoff",
            "action_validate_slot_mappings"} <= names  # the last fills the exported project's lang slot


def test_faq_action_over_http(action_server):
    # The server's first FAQ builds its knowledge base (Kiwi, embeddings, calibration): a slow first call.
    out = _call(action_server, "action_answer_faq", {"lang": "ko"}, intent="faq.passport", timeout=300)
    text = out["responses"][0]["text"]  # the knowledge base's article, its source on the last line
    assert "여권" in text and text.splitlines()[-1].startswith("출처:")


def test_service_request_then_status_over_http(action_server):
    slots = {"lang": "ko", "service_code": "roads.streetlight", "location": "한빛동 중앙로 3",
             "description": "가로등 고장", "consent": True}
    out = _call(action_server, "action_open_service_request", slots)
    ticket = next(e["value"] for e in out["events"] if e["event"] == "slot" and e["name"] == "ticket")
    assert re.fullmatch(r"\d{4}-\d{6}", ticket)
    assert out["responses"][0]["department"] == "도로관리과"
    status = _call(action_server, "action_check_status", {"lang": "en", "ticket": ticket})
    assert status["responses"][0]["response"] == "utter_status"
    assert status["responses"][0]["ticket"] == ticket
