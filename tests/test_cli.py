"""The `pcrm` command line: the JSON forms other tooling relies on."""

from __future__ import annotations

import json
import subprocess
import sys

from bot.settings import ROOT

PCRM = [sys.executable, "-m", "bot.cli"]


def run(*args: str) -> str:
    out = subprocess.run([*PCRM, *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    return out.stdout


def test_route_json_shape():
    result = json.loads(run("route", "쓰레기 언제 버려요?", "--json"))
    assert result["label"] == "faq.waste_schedule"
    assert result["department"] == "waste"
    assert 0 < result["confidence"] <= 1 and result["lang"] == "ko"
    assert isinstance(result["entities"], list)


def test_route_extracts_spoken_ticket_number():
    result = json.loads(run("route", "이공이육 다시 공공공 팔칠일 어떻게 됐어요", "--json"))
    assert result["label"] == "conv.request_status"
    assert {"entity": "ticket", "value": "2026-000871"}.items() <= result["entities"][0].items()


def test_evaluate_json_report(tmp_path):
    data = tmp_path / "set.jsonl"
    rows = [{"text": "여권 만드는 데 얼마나 걸려요", "label": "faq.passport", "department": "civil"},
            {"text": "집 앞에 포트홀 생겼어요", "label": "roads.pothole", "department": "roads"},
            {"text": "사람이 쓰러졌어요 숨을 안 쉬어요", "label": "conv.emergency", "department": "safety"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    report = json.loads(run("evaluate", str(data), "--json"))
    assert report["n"] == 3 and report["accuracy"] == 1.0 and report["department_accuracy"] == 1.0
    assert set(report["per_label"]["faq.passport"]) == {"precision", "recall", "f1", "support"}
    assert set(report["latency_ms"]) == {"p50", "p99"} and isinstance(report["confusion"], list)


def test_heldout_accuracy_meets_the_bar():
    """The held-out set is never trained on: label ≥ 0.90, department ≥ 0.93, every emergency caught."""
    from bot.cli import evaluate
    from bot.engine import Engine

    report = evaluate(Engine(), ROOT / "bench" / "heldout.jsonl")
    assert report["n"] >= 200
    assert report["accuracy"] >= 0.90, report["confusion"][:10]
    assert report["department_accuracy"] >= 0.93
    assert report["per_label"]["conv.emergency"]["recall"] == 1.0


def test_chat_shows_buttons_as_numbers():
    out = subprocess.run([*PCRM, "chat"], cwd=ROOT, input="가로등이 나갔어요 한빛동 중앙로 3\n1\n",
                         capture_output=True, text=True, timeout=600).stdout
    assert "1. " in out and "2. " in out


def test_train_builds_the_knowledge_index_so_serve_only_loads_it(tmp_path):
    """`pcrm train` leaves the KB index beside the model (a first `pcrm serve` would otherwise
    build it for minutes before answering); a second run finds both and builds nothing."""
    import os
    import shutil

    from bot.settings import get_settings

    models = get_settings().pcrm_model_dir
    for model in models.iterdir():  # the trained NLU model(s), linked: this test is about the index
        if (model / "READY").exists():
            shutil.copytree(model, tmp_path / model.name, copy_function=os.link)
    env = {**os.environ, "PCRM_MODEL_DIR": str(tmp_path)}

    def train() -> str:
        return subprocess.run([*PCRM, "train"], cwd=ROOT, env=env, check=True, capture_output=True,
                              text=True, timeout=900).stdout

    first = train()
    assert "knowledge base ready" in first and "built in" in first, first
    assert list(tmp_path.glob("kb-index-*.pkl")) and list(tmp_path.glob("kb-index-*.arrays"))
    second = train()
    assert "loaded in" in second, second
