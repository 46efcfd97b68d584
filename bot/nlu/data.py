"""Reading the Rasa-format training data in ``nlu_data/`` (intents, lookups, synonyms, regexes)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.settings import safe_load_yaml

_EXAMPLE_MARKUP = re.compile(r"\[([^\]]+)\]\([^)]+\)|\[([^\]]+)\]\{[^}]+\}")


@dataclass
class TrainingData:
    """Intent examples plus the entity knowledge that comes with them."""

    examples: list[tuple[str, str]] = field(default_factory=list)   # (text, label)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    synonyms: dict[str, str] = field(default_factory=dict)          # variant -> canonical
    regexes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return sorted({label for _, label in self.examples})


def _items(block: str | list | None) -> list[str]:
    """Rasa writes examples as a YAML block of "- text" lines."""
    if block is None:
        return []
    if isinstance(block, list):
        return [str(x) for x in block]
    out = []
    for line in str(block).splitlines():
        line = line.strip()
        if line.startswith("- "):
            out.append(_EXAMPLE_MARKUP.sub(lambda m: m.group(1) or m.group(2), line[2:].strip()))
    return out


def nlu_files(nlu_dir: Path) -> list[Path]:
    """All YAML files of the NLU data, in a stable order."""
    return sorted(p for p in nlu_dir.rglob("*.yml") if p.is_file())


def load(nlu_dir: Path) -> TrainingData:
    """Parse every ``nlu:`` file under ``nlu_dir``."""
    data = TrainingData()
    for path in nlu_files(nlu_dir):
        doc = safe_load_yaml(path.read_text(encoding="utf-8")) or {}
        for item in doc.get("nlu", []) or []:
            if "intent" in item:
                data.examples += [(t, item["intent"]) for t in _items(item.get("examples"))]
            elif "lookup" in item:
                data.lookups.setdefault(item["lookup"], []).extend(_items(item.get("examples")))
            elif "synonym" in item:
                for variant in _items(item.get("examples")):
                    data.synonyms[variant] = item["synonym"]
            elif "regex" in item:
                data.regexes.setdefault(item["regex"], []).extend(_items(item.get("examples")))
    return data


def fingerprint(nlu_dir: Path, *extra: str) -> str:
    """Hash of the data files (and anything else that changes the model): the cache key."""
    h = hashlib.sha256()
    for path in nlu_files(nlu_dir):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]
