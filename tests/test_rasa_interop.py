"""Rasa interoperability: ``pcrm export rasa`` and the ``rasa`` NLU backend.

The export and the backend's adapter are checked everywhere. With real Rasa Open
Source 3.6.21 (a Python 3.10 venv at ``var/rasa-venv``, built by ``bash
bench/rasa_env.sh`` / ``make rasa-env``, or ``RASA_VENV``) the exported project must
pass ``rasa data validate``, ``rasa train`` must produce a model from it, and our app
with ``PCRM_ENGINE=rasa`` must answer through a real ``rasa run --enable-api``.
Without that venv those tests skip, under ``CI=true`` too: Rasa is an optional,
marker-gated toolchain (``-m rasa``), never a dependency of ours.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from rasa_sdk import Tracker

from bot.engine import Engine
from bot.knowledge import Knowledge
from bot.messages import Message
from bot.nlu.rasa_backend import RasaNLU
from bot.rasa_export import ACTIONS, export
from bot.settings import ROOT, Settings, get_settings

pytestmark = pytest.mark.rasa

RASA_VENV = Path(os.environ.get("RASA_VENV", ROOT / "var" / "rasa-venv"))
RASA = RASA_VENV / "bin" / "rasa"
#: DIET epochs for the real-Rasa tests: enough to classify training sentences, quick on 2 cores.
EPOCHS = int(os.environ.get("PCRM_RASA_TEST_EPOCHS", "12"))
RASA_ENV = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
needs_rasa = pytest.mark.skipif(
    not RASA.exists(),
    reason=f"Rasa Open Source 3.6 not installed at {RASA} (optional toolchain, marker 'rasa'; skipped under "
           "CI=true as well): build it with `make rasa-env` (bash bench/rasa_env.sh, Python 3.10 from pyenv)")


def _kb_answer(faq: str, lang: str = "ko") -> str:
    """The fixture knowledge base's answer of catalog topic ``faq`` (the engine's and the action's)."""
    from bot.kb.articles import Placeholders, load_dir

    cfg = _load(ROOT / "config.yml")
    article = next(a for a in load_dir(os.environ["PCRM_KB_DIR"], cfg) if a.faq == faq)
    return Placeholders(cfg).render(article.answer[lang], lang)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rasa-project")
    settings = get_settings()
    export(out, settings.pcrm_nlu_dir, settings.config(), epochs=EPOCHS)
    return out


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    settings = get_settings()
    return Knowledge(settings.pcrm_nlu_dir, settings.config())


# --- the export (no Rasa needed) --------------------------------------------------------------

def test_export_writes_every_file_and_each_parses(project):
    for rel in ("config.yml", "domain.yml", "data/nlu.yml", "data/rules.yml", "endpoints.yml", "credentials.yml"):
        assert (project / rel).is_file(), rel
        _load(project / rel)  # raises on invalid YAML
    assert _load(project / "endpoints.yml")["action_endpoint"]["url"].endswith("/webhook")
    assert "rest" in _load(project / "credentials.yml")


def test_domain_lists_every_catalog_code_entity_slot_and_action(project, knowledge):
    domain = _load(project / "domain.yml")
    assert set(domain["intents"]) == set(knowledge.labels)
    assert {"ticket", "phone", "dong", "landmark", "road"} <= set(domain["entities"])
    slots = domain["slots"]
    assert slots["lang"]["type"] == "categorical" and slots["lang"]["values"] == ["ko", "en"]
    for name in ("service_code", "location", "description", "when", "consent", "ticket", "handoff_department",
                 "office_open", "handed_off", "status_found", "request_department", "lat", "long", "media_url"):
        assert name in slots and slots[name]["mappings"], name
    assert domain["actions"] == ACTIONS


def test_lang_slot_is_filled_by_the_validate_slot_mappings_action(project):
    """Rasa runs ``action_validate_slot_mappings`` after every user message for ``type: custom`` slots."""
    domain = _load(project / "domain.yml")
    assert domain["slots"]["lang"]["mappings"] == [{"type": "custom"}]
    assert domain["slots"]["lang"]["initial_value"] == "ko"
    assert "action_validate_slot_mappings" in domain["actions"]


# --- the lang slot's action (rasa_sdk, no Rasa needed) ----------------------------------------

def _sdk_tracker(texts: list[str], lang: str = "ko", metadata: dict | None = None) -> Tracker:
    """A rasa_sdk tracker as Rasa sends it to the action: earlier user turns, then ``texts[-1]``."""
    events: list[dict] = [{"event": "action", "name": "action_session_start"},
                          {"event": "session_started"}, {"event": "action", "name": "action_listen"}]
    for i, text in enumerate(texts):
        events.append({"event": "user", "text": text, "parse_data": {"text": text},
                       "metadata": metadata if i == len(texts) - 1 and metadata else {}})
        if i < len(texts) - 1:
            events += [{"event": "action", "name": "utter_greet"}, {"event": "action", "name": "action_listen"}]
    return Tracker.from_dict({"sender_id": "rest:alice", "slots": {"lang": lang, "ticket": None},
                              "latest_message": {"text": texts[-1], "intent": {"name": "conv.greet"},
                                                 "entities": [], "metadata": metadata or {}},
                              "events": events, "paused": False, "followup_action": None, "active_loop": {},
                              "latest_action_name": "action_listen"})


def _validate(project: Path, tracker: Tracker) -> list[dict]:
    from rasa_sdk.executor import CollectingDispatcher

    from actions.language import ValidateSlotMappings

    domain = _load(project / "domain.yml")
    dispatcher = CollectingDispatcher()
    events = asyncio.run(ValidateSlotMappings().run(dispatcher, tracker, domain))
    assert dispatcher.messages == []
    return events


@pytest.mark.parametrize(("texts", "lang", "metadata", "expected"), [
    (["How much is a passport?"], "ko", None, "en"),             # a fresh conversation in English
    (["안녕하세요"], "ko", None, "ko"),
    (["hello, nice to meet you", "안녕하세요"], "en", None, "ko"),  # any Hangul means Korean
    (["안녕하세요", "thanks"], "ko", None, "ko"),                    # one English word: a Korean conversation stays
    (["안녕하세요", "How much is a passport?"], "ko", None, "en"),  # two: it turns English
    (["hello there", "/faq.passport"], "en", None, "en"),          # a button payload keeps the language
    (["hello there", "ok"], "en", None, "en"),
    (["/conv.greet"], "ko", {"lang": "en"}, "en"),                  # a first message follows the channel's hint
    (["안녕하세요", "/conv.greet"], "ko", {"lang": "en"}, "ko"),    # ...a later one does not
])
def test_validate_slot_mappings_action_sets_the_conversation_language(project, texts, lang, metadata, expected):
    events = _validate(project, _sdk_tracker(texts, lang, metadata))
    assert [(e["event"], e["name"], e["value"]) for e in events] == [("slot", "lang", expected)]


def test_validate_slot_mappings_action_leaves_other_slots_to_rasa(project):
    """A from_entity slot Rasa just set (``ticket``) is not echoed back: Rasa keeps its own event."""
    tracker = _sdk_tracker(["2026-000502 status please"], "ko")
    tracker.events.append({"event": "slot", "name": "ticket", "value": "2026-000502"})
    tracker.slots["ticket"] = "2026-000502"
    events = _validate(project, tracker)
    assert [(e["name"], e["value"]) for e in events] == [("lang", "en")]


def test_the_action_and_the_engine_agree_on_the_language(knowledge):
    """Turn after turn, the slot Rasa would hold equals the language our engine answers in."""
    from rasa_sdk.executor import CollectingDispatcher

    from actions.language import ValidateSlotMappings

    conversations = [
        (None, ["hello, nice to meet you", "ok", "/faq.passport", "안녕하세요", "thanks", "How much is a passport?",
                "<img src=x onerror=alert(1)>", "https://example.org", "여권"]),
        (None, ["ok", "yes", "Where can I get a resident certificate?", "ㅎㅇ"]),
        ("en", ["/conv.greet", "네", "ok thanks", "I need help please"]),
        ("en", ["2026-000502"]),
        ("ko", ["hi"]),
    ]
    action = ValidateSlotMappings()
    domain = {"slots": {"lang": {"type": "categorical", "mappings": [{"type": "custom"}]}}}
    for n, (hint, texts) in enumerate(conversations):
        engine = Engine(nlu=RasaNLU("http://rasa.invalid", client=_fake_rasa("conv.greet")))
        slot = "ko"
        for i, text in enumerate(texts):
            message = Message(channel="rest", sender_id=f"agree-{n}", text=text, lang=hint)
            engine.handle(message)
            tracker = _sdk_tracker(texts[:i + 1], slot, {"lang": hint} if hint else None)
            events = asyncio.run(action.run(CollectingDispatcher(), tracker, domain))
            slot = next(e["value"] for e in events if e["name"] == "lang")
            assert slot == engine.states.load(message.conversation_key).lang, (hint, texts[:i + 1])


def test_every_response_is_exported_with_korean_and_english(project, knowledge):
    responses = _load(project / "domain.yml")["responses"]
    assert len(responses) == len(knowledge.responses)
    for key in knowledge.responses:
        name = key if key.startswith("utter_") else f"utter_{key}"  # btn_yes -> utter_btn_yes
        assert name in responses, key
    for name, variations in responses.items():
        assert name.startswith("utter_"), name
        langs = {c["value"] for v in variations for c in v.get("condition", []) if c["name"] == "lang"}
        assert langs == {"ko", "en"}, name
        assert all(v.get("text") for v in variations), name
    # our actions still render status_* in-process from nlu_data/responses.yml
    assert knowledge.render("status_received", "en")


def test_nlu_data_has_every_intent_and_the_entity_knowledge(project, knowledge):
    nlu = _load(project / "data" / "nlu.yml")["nlu"]
    intents = {item["intent"] for item in nlu if "intent" in item}
    assert intents == set(knowledge.labels)
    assert {item["regex"] for item in nlu if "regex" in item} >= {"ticket", "phone"}
    assert {item["lookup"] for item in nlu if "lookup" in item} >= {"dong", "landmark", "road"}
    assert any(item.get("synonym") == "도로 파손" for item in nlu)
    text = (project / "data" / "nlu.yml").read_text(encoding="utf-8")
    assert "](ticket)" in text and "](dong)" in text  # markup so Rasa's RegexEntityExtractor uses the patterns
    rules = _load(project / "data" / "rules.yml")["rules"]
    domain = _load(project / "domain.yml")
    known = set(domain["responses"]) | set(domain["actions"])
    for rule in rules:
        for step in rule["steps"]:
            assert step.get("intent", next(iter(domain["intents"]))) in domain["intents"]
            assert step.get("action", "action_listen") in known | {"action_listen"}


def test_config_pipeline_copes_with_korean(project):
    config = _load(project / "config.yml")
    assert config["language"] == "ko"
    names = [c["name"] for c in config["pipeline"]]
    assert {"DIETClassifier", "RegexEntityExtractor", "EntitySynonymMapper"} <= set(names)
    assert any(c.get("analyzer") == "char_wb" and c["min_ngram"] == 1 and c["max_ngram"] == 4
               for c in config["pipeline"])
    assert {p["name"] for p in config["policies"]} == {"RulePolicy", "MemoizationPolicy"}


def test_cli_export(tmp_path, capsys):
    from bot.cli import main

    assert main(["export", "rasa", str(tmp_path / "proj"), "--epochs", "5"]) == 0
    assert (tmp_path / "proj" / "domain.yml").exists()
    assert "epochs: 5" in (tmp_path / "proj" / "config.yml").read_text(encoding="utf-8")


# --- the backend, against a stand-in for /model/parse ----------------------------------------

def _fake_rasa(intent: str, entities: list | None = None) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/model/parse"
        return httpx.Response(200, json={
            "text": "x", "intent": {"name": intent, "confidence": 0.93},
            "intent_ranking": [{"name": intent, "confidence": 0.93}, {"name": "conv.greet", "confidence": 0.02}],
            "entities": entities or []})
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_rasa_parse_keeps_our_entities_and_maps_lookups_to_address():
    nlu = RasaNLU("http://rasa.invalid", client=_fake_rasa("conv.request_status", [
        {"entity": "ticket", "value": "2026 000871", "start": 0, "end": 11, "extractor": "RegexEntityExtractor"},
        {"entity": "dong", "value": "한빛동", "start": 12, "end": 15, "extractor": "RegexEntityExtractor"}]))
    p = nlu("2026 000871 한빛동 처리됐나요", "ko")
    assert (p.label, p.confidence, p.lang) == ("conv.request_status", 0.93, "ko")
    assert p.ranking[0] == ("conv.request_status", 0.93)
    tickets = [e["value"] for e in p.entities if e["entity"] == "ticket"]
    assert tickets == ["2026-000871"]  # ours, normalised; Rasa's raw copy dropped
    assert {"entity": "address", "value": "한빛동"}.items() <= next(
        e for e in p.entities if e["extractor"].startswith("rasa:")).items()


def test_engine_selects_the_rasa_backend_from_settings():
    engine = Engine(settings=Settings(pcrm_engine="rasa", rasa_url="http://127.0.0.1:9"))
    assert isinstance(engine.nlu, RasaNLU) and engine.nlu.url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="RASA_URL"):
        _ = Engine(settings=Settings(pcrm_engine="rasa", rasa_url=None)).nlu


def test_engine_turn_with_rasa_nlu_answers_the_faq(knowledge):
    engine = Engine(nlu=RasaNLU("http://rasa.invalid", client=_fake_rasa("faq.passport")))
    turn = engine.handle(Message(channel="rest", sender_id="r1", text="여권 얼마나 걸려요"))
    assert turn.label == "faq.passport"
    assert turn.replies[0].text.startswith(_kb_answer("faq.passport"))


def test_rasa_down_means_apology_and_handoff_not_silence():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    engine = Engine(nlu=RasaNLU("http://rasa.invalid", client=httpx.Client(transport=httpx.MockTransport(refuse))))
    turn = engine.handle(Message(channel="rest", sender_id="r2", text="여권 얼마나 걸려요"))
    assert turn.label == "error" and turn.routing.action == "handoff" and turn.replies


# --- real Rasa Open Source 3.6 ------------------------------------------------------------------

def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=RASA_ENV, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rasa_model(project) -> Path:
    t0 = time.monotonic()
    out = _run([str(RASA), "train", "--fixed-model-name", "pcrm", "--out", "models"], project, 900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    model = project / "models" / "pcrm.tar.gz"
    assert model.is_file() and model.stat().st_size > 0
    print(f"rasa train ({EPOCHS} DIET epochs): {time.monotonic() - t0:.0f}s")
    return model


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def action_server(project):
    """Our actions/ behind a real rasa_sdk action server (our venv), for Rasa's own turns."""
    import sys

    from crm_store.db import upgrade

    port = _free_port()
    db = project / "actions.db"
    upgrade(f"sqlite:///{db}")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "PYTHONPATH": str(ROOT)}
    log = project / "actions.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "rasa_sdk", "--actions", "actions", "-p", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("rasa_sdk action server did not start: " + log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url + "/webhook"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def rasa_server(project, rasa_model, action_server):
    port = _free_port()
    log = project / "rasa-run.log"
    endpoints = project / "endpoints-test.yml"
    endpoints.write_text(yaml.safe_dump({"action_endpoint": {"url": action_server}}), encoding="utf-8")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(RASA), "run", "--enable-api", "-m", str(rasa_model), "-i", "127.0.0.1",
                                 "-p", str(port), "--endpoints", str(endpoints), "--credentials", "credentials.yml"],
                                cwd=project, env=RASA_ENV, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail("rasa run exited: " + log.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(url + "/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("rasa run did not answer /status in 300 s: " + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


@needs_rasa
@pytest.mark.timeout(600)
def test_rasa_data_validate_passes_on_the_export(project):
    out = _run([str(RASA), "data", "validate"], project, 600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@needs_rasa
@pytest.mark.timeout(1200)
def test_rasa_train_produces_a_model(rasa_model):
    import tarfile

    with tarfile.open(rasa_model) as tar:
        names = tar.getnames()
    assert any("DIETClassifier" in n or "train_DIETClassifier" in n for n in names), names[:20]


@needs_rasa
@pytest.mark.timeout(1200)
def test_rasa_backend_answers_rest_message_through_our_app(rasa_server, tmp_path, knowledge):
    from bot.app import create_app
    from tests.channel_servers import ServerThread

    cfg = _load(ROOT / "config.yml")
    cfg["business_hours"]["always_open"] = True
    (tmp_path / "config.yml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'pcrm.db'}", redis_url=None, pcrm_engine="rasa",
                        rasa_url=rasa_server, pcrm_config=tmp_path / "config.yml")
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        assert isinstance(app.state.engine.nlu, RasaNLU)
        r = httpx.post(server.url + "/webhooks/rest/webhook",
                       json={"sender": "rasa-alice", "message": "민원실 운영 시간 알려 주세요"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()[0]["text"].startswith(_kb_answer("faq.office_hours"))
        # the ticket regex still works with Rasa's NLU: a status question reaches the status action
        r = httpx.post(server.url + "/webhooks/rest/webhook",
                       json={"sender": "rasa-bob", "message": "접수번호 2026-000502 확인해 주세요"}, timeout=60)
        assert r.status_code == 200
        assert "2026-000502" in r.json()[0]["text"]
    finally:
        server.stop()
    parsed = httpx.post(rasa_server + "/model/parse", json={"text": "민원실 운영 시간 알려 주세요"}, timeout=30).json()
    assert parsed["intent"]["name"] == "faq.office_hours"



@needs_rasa
@pytest.mark.timeout(1200)
def test_rasa_runs_the_exported_assistant_with_our_actions(rasa_server, knowledge):
    """Whole turns in Rasa: its REST channel, the exported rules, our actions on rasa_sdk, our responses."""
    r = httpx.post(rasa_server + "/webhooks/rest/webhook",
                   json={"sender": "rasa-only", "message": "민원실 운영 시간 알려 주세요"}, timeout=60)
    assert r.status_code == 200, r.text
    texts = [m.get("text") for m in r.json()]
    assert len(texts) == 1 and texts[0].startswith(_kb_answer("faq.office_hours"))
    r = httpx.post(rasa_server + "/webhooks/rest/webhook", json={"sender": "rasa-only", "message": "안녕하세요"},
                   timeout=60)
    assert r.json()[0]["text"] == knowledge.render("utter_greet", "ko")


@needs_rasa
@pytest.mark.timeout(1200)
def test_rasa_answers_an_english_speaking_resident_in_english(rasa_server, knowledge):
    """``lang`` is set by our ``action_validate_slot_mappings`` after every message, as our engine decides it."""
    def say(sender: str, text: str) -> list[str]:
        r = httpx.post(rasa_server + "/webhooks/rest/webhook", json={"sender": sender, "message": text}, timeout=60)
        assert r.status_code == 200, r.text
        return [m.get("text") for m in r.json()]

    def lang_slot(sender: str) -> str:
        return httpx.get(f"{rasa_server}/conversations/{sender}/tracker", timeout=30).json()["slots"]["lang"]

    # a training sentence of conv.greet (a static response): the most robust English greeting
    assert say("rasa-en", "hello, nice to meet you") == [knowledge.render("utter_greet", "en")]
    assert lang_slot("rasa-en") == "en"
    assert say("rasa-en", "안녕하세요") == [knowledge.render("utter_greet", "ko")]  # any Hangul: Korean
    assert lang_slot("rasa-en") == "ko"
    assert say("rasa-ko", "안녕하세요") == [knowledge.render("utter_greet", "ko")]
    assert say("rasa-ko", "hi") == [knowledge.render("utter_greet", "ko")]  # one English word: still Korean
    assert lang_slot("rasa-ko") == "ko"
