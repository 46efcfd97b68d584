"""What the bot knows: the service catalog, the municipality's config and its responses.

Loaded from ``nlu_data/catalog.yml`` (codes kept exactly as the reference
catalog), ``nlu_data/responses.yml`` (Rasa responses with a ``lang`` condition)
and ``config.yml``. Nothing here is specific to a channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bot.municipality import DEFAULT_EXPECTED_HOURS, DEFAULT_SLOTS, Municipality, ServiceConfig
from bot.settings import safe_load_yaml

LANGS = ("ko", "en")


@dataclass
class Service:
    code: str
    department: str
    kind: str
    ko: str
    en: str
    slots: list[str] = field(default_factory=lambda: list(DEFAULT_SLOTS))
    expected_hours: float = DEFAULT_EXPECTED_HOURS

    def name(self, lang: str) -> str:
        return self.en if lang == "en" else self.ko


class Knowledge:
    """Catalog, responses and municipality facts, with rendering in either language."""

    def __init__(self, nlu_dir: Path, config: dict[str, Any]) -> None:
        catalog = safe_load_yaml((nlu_dir / "catalog.yml").read_text(encoding="utf-8"))
        self.config = config
        m = self.municipality
        self.departments: dict[str, dict[str, Any]] = {d["code"]: d for d in catalog["departments"]}
        for code, extra in m.departments.items():
            self.departments.setdefault(code, {"code": code, "ko": code, "en": code}).update(
                extra.model_dump(exclude_unset=True))
        default = ServiceConfig()
        self.services: dict[str, Service] = {}
        for s in catalog["services"]:
            cfg = m.services.get(s["code"], default)
            self.services[s["code"]] = Service(s["code"], s["department"], s["kind"], s["ko"], s["en"],
                                               slots=list(cfg.slots), expected_hours=cfg.expected_hours)
        self.faq: dict[str, dict[str, Any]] = {f["code"]: f for f in catalog["faq_topics"]}
        self.conversation: dict[str, dict[str, Any]] = {c["code"]: c for c in catalog["conversation"]}
        self.responses = self._load_responses(nlu_dir / "responses.yml")

    @cached_property
    def municipality(self) -> Municipality:
        """``config`` typed (validated on first use; the app validated it at start already)."""
        return Municipality.of(self.config)

    @staticmethod
    def _load_responses(path: Path) -> dict[str, dict[str, str]]:
        doc = safe_load_yaml(path.read_text(encoding="utf-8")) or {}
        out: dict[str, dict[str, str]] = {}
        for key, variations in (doc.get("responses") or {}).items():
            for var in variations:
                lang = "ko"
                for cond in var.get("condition", []) or []:
                    if cond.get("name") == "lang":
                        lang = cond.get("value", "ko")
                out.setdefault(key, {})[lang] = var.get("text", "")
        return out

    @property
    def labels(self) -> list[str]:
        """Every label the classifier may give: services, FAQ topics, conversation codes."""
        return [*self.services, *self.faq, *self.conversation]

    def department_of(self, label: str) -> str | None:
        """The catalog department responsible for a label (None for small talk)."""
        if label in self.services:
            return self.services[label].department
        for table in (self.faq, self.conversation):
            if label in table:
                return table[label].get("department")
        return None

    def department_name(self, code: str | None, lang: str) -> str:
        dept = self.departments.get(code or "general", {})
        return str(dept.get("en" if lang == "en" else "ko", code or ""))

    def label_name(self, label: str, lang: str) -> str:
        """Human name of a label, for clarification buttons and agent summaries."""
        for table in (self.faq, self.conversation):
            if label in table:
                return str(table[label]["en" if lang == "en" else "ko"])
        if label in self.services:
            return self.services[label].name(lang)
        return label

    def render(self, key: str, lang: str, **values: Any) -> str:
        """The response ``key`` in ``lang`` (falling back to Korean), placeholders filled."""
        variants = self.responses.get(key)
        if not variants:
            raise KeyError(f"no response {key!r} in nlu_data/responses.yml")
        text = variants.get(lang) or variants.get("ko") or next(iter(variants.values()))
        if values:
            text = text.format_map(_Missing(values))
        return text


class _Missing(dict):
    """Leaves unknown placeholders visible instead of raising mid-conversation."""

    def __missing__(self, key: str) -> str:
        return "-"
