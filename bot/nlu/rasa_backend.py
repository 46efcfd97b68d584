"""NLU from a Rasa Open Source server: ``engine: rasa`` (config.yml) or ``PCRM_ENGINE=rasa``, with ``RASA_URL``.

Only the NLU is swapped: ``RasaNLU`` is a parser ``(text, lang_hint) -> Parse`` for
``bot.engine.Engine``, so channels, the store, routing, hand-off and the console work
as with the builtin model. It asks the server's ``POST /model/parse`` (``rasa run
--enable-api`` with a model trained on ``pcrm export rasa``) for the intent and its
entities, and still runs our own entity regexes (tickets, phones, addresses, times,
coordinates) over the normalised text, so forms and status look-ups behave the same.
Rasa's lookup-table entities (``dong``, ``landmark``, ``road``) become ``address``.
"""

from __future__ import annotations

from typing import Any

import httpx

from bot.nlu import entities as ent
from bot.nlu.language import detect
from bot.nlu.model import Parse
from bot.nlu.normalize import normalize
from bot.rasa_export import ADDRESS_LOOKUPS

#: Entities our regexes extract (with normalised values): Rasa's copies of these are dropped.
_OURS = ("ticket", "phone", "rrn", "coordinates", "when")


class RasaNLU:
    """A parser backed by a Rasa server's HTTP API. Thread-safe (one pooled httpx client)."""

    def __init__(self, url: str, timeout: float = 10.0, token: str | None = None,
                 client: httpx.Client | None = None) -> None:
        if not url:
            raise ValueError("engine 'rasa' needs RASA_URL (e.g. http://127.0.0.1:5005)")
        self.url = url.rstrip("/")
        self.params = {"token": token} if token else None
        self.client = client or httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=64))

    def __repr__(self) -> str:
        return f"RasaNLU({self.url!r})"

    def status(self) -> dict[str, Any]:
        """The server's ``GET /status`` (which model is loaded)."""
        r = self.client.get(f"{self.url}/status", params=self.params)
        r.raise_for_status()
        return r.json()

    def __call__(self, text: str, lang_hint: str | None = None) -> Parse:
        norm = normalize(text)
        lang = detect(norm, default=lang_hint or "ko")
        if not norm:
            return Parse(text, norm, lang, "conv.out_of_scope", 0.0)
        r = self.client.post(f"{self.url}/model/parse", json={"text": text.strip()}, params=self.params)
        r.raise_for_status()
        return self.to_parse(text, norm, lang, r.json())

    @staticmethod
    def to_parse(text: str, norm: str, lang: str, result: dict[str, Any]) -> Parse:
        """Our ``Parse`` from a ``/model/parse`` answer (plus our own regex entities)."""
        intent = result.get("intent") or {}
        label = intent.get("name") or "conv.out_of_scope"
        if label == "nlu_fallback":  # a FallbackClassifier in the Rasa pipeline
            label = "conv.out_of_scope"
        confidence = float(intent.get("confidence") or 0.0)
        ranking = [(i["name"], float(i.get("confidence") or 0.0))
                   for i in result.get("intent_ranking") or [] if i.get("name")][:5]
        if not ranking:
            ranking = [(label, confidence)]
        ours = ent.extract_patterns(norm)
        seen = {(e["entity"], str(e["value"])) for e in ours}
        theirs = []
        for e in result.get("entities") or []:
            name = "address" if e.get("entity") in ADDRESS_LOOKUPS else e.get("entity")
            if not name or name in _OURS or (name, str(e.get("value"))) in seen:
                continue
            seen.add((name, str(e.get("value"))))
            theirs.append({"entity": name, "value": e.get("value"), "start": e.get("start", 0),
                           "end": e.get("end", 0), "extractor": f"rasa:{e.get('extractor', '')}"})
        return Parse(text, norm, lang, label, confidence, ranking, ent.merge(ours, theirs))
