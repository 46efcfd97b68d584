"""``pcrm export rasa DIR``: our ``nlu_data/`` as a complete Rasa Open Source 3.x project.

Teams coming from Rasa (or going to it) get a project that ``rasa data validate``
accepts and ``rasa train`` turns into a model, built from the same files the
builtin engine trains on:

* ``config.yml`` — a pipeline that copes with Korean without a language model:
  whitespace tokens (Korean eojeol) plus character n-grams 1–4 (``char_wb``), which
  carry the morphemes and survive spacing and typos; regex/lookup features;
  ``DIETClassifier`` for intents; ``RegexEntityExtractor`` + ``EntitySynonymMapper``
  for the regex/lookup entities. ``RulePolicy`` + ``MemoizationPolicy``.
* ``domain.yml`` — intents are the catalog codes, the entities, the slots our actions
  read and set, the responses of ``nlu_data/responses.yml`` and our ``actions/``.
  ``lang`` is categorical ko/en and every response is conditioned on it; its
  ``type: custom`` mapping is filled after every user message by
  ``action_validate_slot_mappings`` (``actions/language.py``, listed among the
  actions so that Rasa runs it), with the engine's own rule
  (:func:`bot.nlu.language.conversation_lang`): an English-speaking resident is
  answered in English under Rasa too.
* ``data/nlu.yml`` — every intent example, with entity markup added where our own
  regexes and lookup tables find one (Rasa's extractor only uses patterns whose
  entity occurs in the training data), plus the regexes, lookups and synonyms.
* ``data/rules.yml`` — ``nlu_data/rules.yml`` as it is.
* ``endpoints.yml`` (action server), ``credentials.yml`` (REST channel).

Rasa wants every response name to start with ``utter_``: ``btn_*`` and ``status_*``
are exported as ``utter_btn_*`` and ``utter_status_*``. Our actions keep rendering
``status_*`` from ``nlu_data/responses.yml`` in-process, so nothing else changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bot.municipality import Municipality
from bot.nlu import data as nlu_data

RASA_VERSION = "3.6.21"
DEFAULT_EPOCHS = 100
#: Rasa runs ``action_validate_slot_mappings`` after every user message when the domain lists it:
#: it fills the ``lang`` slot (``actions/language.py``).
ACTIONS = ["action_answer_faq", "action_open_service_request", "action_check_status", "action_list_my_requests",
           "action_handoff", "action_validate_slot_mappings",
           # issue 20: duplicates and closing the loop (actions/duplicates.py)
           "action_find_duplicate", "action_subscribe_request", "action_confirm_fixed", "action_reopen_request"]
#: Lookup tables whose matches our engine treats as the ``address`` entity.
ADDRESS_LOOKUPS = ("dong", "landmark", "road", "address")

# Slots our actions and the policy read or set: (name, type, extra).
_SLOTS: list[tuple[str, str, dict[str, Any]]] = [
    ("lang", "categorical", {"values": ["ko", "en"], "initial_value": "ko"}),
    ("service_code", "text", {}),
    ("location", "text", {}),
    ("description", "text", {}),
    ("when", "text", {}),
    ("consent", "bool", {}),
    ("ticket", "text", {"from_entity": "ticket"}),
    ("handoff_department", "text", {}),
    ("office_open", "bool", {}),
    ("handed_off", "bool", {}),
    ("status_found", "bool", {}),
    ("my_requests", "float", {}),
    ("request_department", "text", {}),
    ("lat", "float", {}),
    ("long", "float", {}),
    ("media_url", "text", {}),
    ("duplicate_ticket", "text", {}),
    ("duplicate_values", "any", {}),
    ("subscribed", "bool", {}),
    ("fixed_ticket", "text", {}),
    ("fixed_words", "text", {}),
]


def response_name(key: str) -> str:
    """The Rasa name of one of our response keys (``btn_yes`` -> ``utter_btn_yes``)."""
    return key if key.startswith("utter_") else f"utter_{key}"


def pipeline_config(language: str = "ko", epochs: int = DEFAULT_EPOCHS, assistant_id: str = "pcrm") -> dict[str, Any]:
    """The Rasa ``config.yml``."""
    return {
        "recipe": "default.v1",
        "language": language,
        "assistant_id": assistant_id,
        "pipeline": [
            # Korean separates eojeol (word + particles) by spaces; the character n-grams
            # below recover the stems that whitespace tokens miss ("버렸어요" ~ "버려요").
            {"name": "WhitespaceTokenizer"},
            # Hangul is a word character: \b would never match before a particle.
            {"name": "RegexFeaturizer", "case_sensitive": False, "use_word_boundaries": False},
            {"name": "LexicalSyntacticFeaturizer"},
            {"name": "CountVectorsFeaturizer"},
            {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
            {"name": "DIETClassifier", "epochs": epochs, "entity_recognition": False,
             "constrain_similarities": True, "random_seed": 13},
            {"name": "RegexEntityExtractor", "case_sensitive": False, "use_lookup_tables": True,
             "use_regexes": True, "use_word_boundaries": False},
            {"name": "EntitySynonymMapper"},
        ],
        "policies": [
            {"name": "MemoizationPolicy"},
            {"name": "RulePolicy", "core_fallback_threshold": 0.3, "enable_fallback_prediction": False},
        ],
    }


def _annotate(text: str, patterns: list[tuple[str, re.Pattern[str]]]) -> tuple[str, set[str]]:
    """``text`` with ``[span](entity)`` markup where a pattern matches (first match wins, no overlaps)."""
    spans: list[tuple[int, int, str]] = []
    for name, rx in patterns:
        for m in rx.finditer(text):
            if m.end() > m.start() and not any(s < m.end() and m.start() < e for s, e, _ in spans):
                spans.append((m.start(), m.end(), name))
    if not spans or any(c in text for c in "[]"):
        return text, set()
    out, pos = [], 0
    for s, e, name in sorted(spans):
        out += [text[pos:s], f"[{text[s:e]}]({name})"]
        pos = e
    out.append(text[pos:])
    return "".join(out), {name for _, _, name in spans}


def _entity_patterns(td: nlu_data.TrainingData) -> list[tuple[str, re.Pattern[str]]]:
    patterns: list[tuple[str, re.Pattern[str]]] = []
    for name, regexes in td.regexes.items():
        patterns += [(name, re.compile(r, re.IGNORECASE)) for r in regexes]
    for name, values in td.lookups.items():
        alts = sorted((v for v in values if v.strip()), key=len, reverse=True)
        if alts:
            patterns.append((name, re.compile("|".join(re.escape(v) for v in alts), re.IGNORECASE)))
    return patterns


def nlu_document(td: nlu_data.TrainingData, labels: list[str]) -> tuple[dict[str, Any], set[str]]:
    """``data/nlu.yml`` and the entities its markup uses."""
    patterns = _entity_patterns(td)
    by_label: dict[str, list[str]] = {label: [] for label in labels}
    used: set[str] = set()
    for text, label in td.examples:
        annotated, names = _annotate(text, patterns)
        by_label.setdefault(label, []).append(annotated)
        used |= names
    nlu: list[dict[str, Any]] = [
        {"intent": label, "examples": _Block("".join(f"- {t}\n" for t in examples))}
        for label, examples in by_label.items() if examples
    ]
    for name, regexes in td.regexes.items():
        nlu.append({"regex": name, "examples": _Block("".join(f"- {r}\n" for r in regexes))})
    for name, values in td.lookups.items():
        nlu.append({"lookup": name, "examples": _Block("".join(f"- {v}\n" for v in values))})
    synonyms: dict[str, list[str]] = {}
    for variant, canonical in td.synonyms.items():
        synonyms.setdefault(canonical, []).append(variant)
    for canonical, variants in synonyms.items():
        nlu.append({"synonym": canonical, "examples": _Block("".join(f"- {v}\n" for v in variants))})
    return {"version": "3.1", "nlu": nlu}, used


def domain_document(nlu_dir: Path, labels: list[str], entities: list[str]) -> dict[str, Any]:
    """``domain.yml``: intents (catalog codes), entities, slots, responses, actions."""
    responses_doc = yaml.safe_load((nlu_dir / "responses.yml").read_text(encoding="utf-8")) or {}
    responses = {response_name(k): v for k, v in (responses_doc.get("responses") or {}).items()}
    slots: dict[str, Any] = {}
    for name, kind, extra in _SLOTS:
        slot: dict[str, Any] = {"type": kind, "influence_conversation": False}
        if "values" in extra:
            slot["values"] = extra["values"]
        if "initial_value" in extra:
            slot["initial_value"] = extra["initial_value"]
        slot["mappings"] = ([{"type": "from_entity", "entity": extra["from_entity"]}]
                            if "from_entity" in extra else [{"type": "custom"}])
        slots[name] = slot
    return {
        "version": "3.1",
        "intents": labels,
        "entities": entities,
        "slots": slots,
        "responses": responses,
        "actions": ACTIONS,
        "session_config": {"session_expiration_time": 60, "carry_over_slots_to_new_session": True},
    }


def export(out_dir: Path, nlu_dir: Path, config: dict[str, Any] | None = None,
           epochs: int = DEFAULT_EPOCHS, action_url: str = "http://localhost:5055/webhook") -> list[Path]:
    """Write the Rasa project for ``nlu_dir`` into ``out_dir``; returns the files written."""
    config = config or {}
    catalog = yaml.safe_load((nlu_dir / "catalog.yml").read_text(encoding="utf-8")) or {}
    catalog_codes = [x["code"] for key in ("services", "faq_topics", "conversation") for x in catalog.get(key) or []]
    td = nlu_data.load(nlu_dir / "nlu")
    labels = catalog_codes + [lab for lab in td.labels if lab not in catalog_codes]
    nlu_doc, used = nlu_document(td, labels)
    entities = sorted(set(td.regexes) | set(td.lookups) | used | {"ticket"})
    municipality = Municipality.of(config).municipality.code or "pcrm"

    rules_path = nlu_dir / "rules.yml"
    rules_doc = yaml.safe_load(rules_path.read_text(encoding="utf-8")) if rules_path.exists() else None
    files: dict[str, Any] = {
        "config.yml": pipeline_config("ko", epochs, f"pcrm-{municipality}"),
        "domain.yml": domain_document(nlu_dir, labels, entities),
        "data/nlu.yml": nlu_doc,
        "data/rules.yml": rules_doc or {"version": "3.1", "rules": []},
        "endpoints.yml": {"action_endpoint": {"url": action_url}},
        "credentials.yml": {"rest": None},
    }
    written = []
    for rel, doc in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Generated by `pcrm export rasa` from {nlu_dir.name}/ for Rasa Open Source {RASA_VERSION}.\n"
        path.write_text(header + _dump(doc), encoding="utf-8")
        written.append(path)
    return written


class _Block(str):
    """A string written as a YAML literal block (Rasa's ``examples: |``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Block, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", str(s), style="|"))
_Dumper.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", ""))


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1000)
