"""A local geocoder for the district: addresses ⇄ coordinates from ``nlu_data/gazetteer.yml``.

Why local: the call center must work with no internet at run time, and a resident who shares
their location should read back "한빛로 117 (한빛동)", not ``37.566500, 126.978000``. The
gazetteer is small (roads as polylines with house-number anchors, areas, landmarks), so a linear
scan is fast enough (microseconds) and needs no spatial index.

* :meth:`Gazetteer.reverse` — the nearest point on any road, its interpolated house number and
  the 동 of the nearest area centre (``None`` outside the district);
* :meth:`Gazetteer.forward` — a typed road address ("중앙로 12", "12 Jungang-ro") or a landmark
  ("한빛역 앞") to coordinates;
* :func:`address_key` — the comparable form of an address (``road:number``), what duplicate
  detection matches on when a report has no coordinates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

EARTH_M = 6_371_000.0
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "nlu_data" / "gazetteer.yml"


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Road:
    code: str
    ko: str
    en: str
    names: tuple[str, ...]
    anchors: tuple[tuple[int, float, float], ...]

    def point(self, number: int) -> tuple[float, float] | None:
        """Coordinates of house ``number`` (interpolated between anchors); None off the road's range."""
        a = self.anchors
        if not a[0][0] <= number <= a[-1][0]:
            return None
        for (n1, la1, lo1), (n2, la2, lo2) in zip(a, a[1:], strict=False):
            if n1 <= number <= n2:
                t = (number - n1) / (n2 - n1) if n2 != n1 else 0.0
                return la1 + t * (la2 - la1), lo1 + t * (lo2 - lo1)
        return None


@dataclass(frozen=True)
class Address:
    """A place in the district: road and house number (or a landmark), area and coordinates."""

    road: str
    number: int
    area_ko: str
    area_en: str
    lat: float
    long: float
    road_ko: str
    road_en: str
    landmark: str | None = None
    approximate: bool = False

    @property
    def key(self) -> str:
        return f"{self.road}:{self.number}"

    def label(self, lang: str = "ko") -> str:
        """"한빛로 117 (한빛동)" / "117 Hanbit-ro (Hanbit-dong)"; reverse-geocoded ones say "부근"/"near"."""
        if lang == "en":
            text = f"{self.number} {self.road_en} ({self.area_en})"
            return f"near {text}" if self.approximate else text
        text = f"{self.road_ko} {self.number} ({self.area_ko})"
        return f"{text} 부근" if self.approximate else text


class Gazetteer:
    """Roads, areas and landmarks of one district, loaded from a YAML file."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.city: dict[str, str] = data.get("city") or {}
        self.max_distance_m = float(data.get("max_distance_m", 400))
        self.roads: dict[str, Road] = {}
        for code, r in (data.get("roads") or {}).items():
            names = (r["ko"], r["en"], *(r.get("aliases") or []))
            self.roads[code] = Road(code, r["ko"], r["en"], tuple(names),
                                    tuple((int(n), float(la), float(lo)) for n, la, lo in r["anchors"]))
        self.areas = [(a["ko"], a["en"], float(a["center"][0]), float(a["center"][1]))
                      for a in (data.get("areas") or {}).values()]
        self.landmarks: list[tuple[tuple[str, ...], str, int]] = [
            ((lm["ko"], lm["en"], *(lm.get("aliases") or [])), lm["at"][0], int(lm["at"][1]))
            for lm in data.get("landmarks") or []]
        # Longest names first, so "중앙대로" wins over "중앙로" and "Hanbit-gu Office" over "구청".
        by_len = sorted(((n, code) for code, road in self.roads.items() for n in road.names),
                        key=lambda p: -len(p[0]))
        self._road_of = {_norm(n): code for n, code in by_len}
        alt = "|".join(_name_pattern(n) for n, _ in by_len)
        self._ko_rx = re.compile(rf"({alt})\s*(\d{{1,4}})(?:\s*(?:번지|번))?(?!\d)", re.IGNORECASE)
        self._en_rx = re.compile(rf"(?<!\d)(\d{{1,4}})\s*,?\s*({alt})(?![a-z])", re.IGNORECASE)
        lm_names = sorted(((n, i) for i, lm in enumerate(self.landmarks) for n in lm[0]), key=lambda p: -len(p[0]))
        self._landmark_of = {_norm(n): i for n, i in lm_names}
        self._lm_rx = re.compile("|".join(_name_pattern(n) for n, _ in lm_names), re.IGNORECASE) if lm_names else None

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PATH) -> Gazetteer:
        return cls(yaml.safe_load(Path(path).read_text(encoding="utf-8")))

    def area(self, lat: float, long: float) -> tuple[str, str]:
        """The 동 (ko, en) whose centre is nearest."""
        if not self.areas:
            return "", ""
        ko, en, _, _ = min(self.areas, key=lambda a: distance_m(lat, long, a[2], a[3]))
        return ko, en

    def _address(self, road: Road, number: int, lat: float, long: float, **kw: Any) -> Address:
        area_ko, area_en = self.area(lat, long)
        return Address(road.code, number, area_ko, area_en, lat, long, road.ko, road.en, **kw)

    def reverse(self, lat: float, long: float) -> Address | None:
        """The nearest road address to a shared location; None outside the district.

        Each road segment is projected on a local flat plane (metres; fine at this scale) and the
        house number interpolated at the foot of the perpendicular.
        """
        kx = math.cos(math.radians(lat)) * math.pi / 180 * EARTH_M
        ky = math.pi / 180 * EARTH_M
        best: tuple[float, Road, float] | None = None
        for road in self.roads.values():
            for (n1, la1, lo1), (n2, la2, lo2) in zip(road.anchors, road.anchors[1:], strict=False):
                ax, ay = (lo1 - long) * kx, (la1 - lat) * ky
                bx, by = (lo2 - long) * kx, (la2 - lat) * ky
                dx, dy = bx - ax, by - ay
                seg2 = dx * dx + dy * dy
                t = 0.0 if seg2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / seg2))
                d = math.hypot(ax + t * dx, ay + t * dy)
                if best is None or d < best[0]:
                    best = (d, road, n1 + t * (n2 - n1))
        if best is None or best[0] > self.max_distance_m:
            return None
        _, road, number = best
        return self._address(road, max(1, round(number)), lat, long, approximate=True)

    def forward(self, text: str) -> Address | None:
        """The first road address in ``text`` ("중앙로 12", "12 Jungang-ro"), else a landmark it names."""
        hit: tuple[str, int] | None = None
        m = self._ko_rx.search(text)
        if m:
            hit = (self._road_of[_norm(m.group(1))], int(m.group(2)))
        else:
            m = self._en_rx.search(text)
            if m:
                hit = (self._road_of[_norm(m.group(2))], int(m.group(1)))
        landmark = None
        if hit is None and self._lm_rx is not None:
            lm = self._lm_rx.search(text)
            if lm:
                names, road_code, number = self.landmarks[self._landmark_of[_norm(lm.group(0))]]
                hit, landmark = (road_code, number), names[0]
        if hit is None:
            return None
        road = self.roads[hit[0]]
        point = road.point(hit[1])
        if point is None:
            return None
        return self._address(road, hit[1], point[0], point[1], landmark=landmark)

    def address_key(self, text: str | None) -> str | None:
        """``road:number`` when the text holds a district address, else its letters squashed
        (so "중앙로 12 앞" and "중앙로12" compare equal); None for nothing."""
        if not text or not text.strip():
            return None
        found = self.forward(text)
        if found is not None:
            return found.key
        squashed = re.sub(r"[\W_]+", "", text.lower())
        return squashed[:128] or None


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "", name.lower())


def _name_pattern(name: str) -> str:
    """A name matched with or without its spaces and hyphens ("Jungang-ro", "jungang ro", "jungangro")."""
    parts = [re.escape(p) for p in re.split(r"[\s\-]+", name) if p]
    return r"[\s\-]?".join(parts)


@lru_cache(maxsize=4)
def gazetteer(path: str | None = None) -> Gazetteer:
    """The district's gazetteer (loaded once per path)."""
    return Gazetteer.load(path or DEFAULT_PATH)
