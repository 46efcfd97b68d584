"""Photos residents and crews send: checked, their EXIF location read, then stored without EXIF.

A phone photo's EXIF can hold where it was taken (useful: the report's place when the resident
did not share one) and much that is nobody's business (device, owner name, exact time). We read
the GPS position, then re-encode the pixels alone (orientation applied, at most
:data:`MAX_SIDE` px) as JPEG: nothing of the original file's metadata is kept.
Files live under ``var/media`` (next to the model cache) and are served to staff only
(``/field/media/<name>``); a ``data:`` URL from a browser is accepted as well as bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_BYTES = 8 * 1024 * 1024
MAX_SIDE = 2048
ALLOWED = {"JPEG", "PNG", "WEBP", "GIF", "MPO"}
NAME_RE = re.compile(r"^[0-9a-f]{32}\.jpg$")
_DATA_URL = re.compile(r"^data:image/(jpeg|jpg|png|webp|gif);base64,", re.IGNORECASE)


class PhotoError(ValueError):
    """Not a photo we take (too big, not an image, an unsupported type)."""


@dataclass
class StoredPhoto:
    name: str
    path: Path
    lat: float | None
    long: float | None


def media_dir(settings: Any) -> Path:
    return Path(settings.pcrm_model_dir).parent / "media"


def decode_data_url(value: str) -> bytes:
    """The bytes of a ``data:image/…;base64,`` URL (the browser's canvas/FileReader output)."""
    m = _DATA_URL.match(value or "")
    if not m:
        raise PhotoError("a photo must be a data:image/(jpeg|png|webp|gif);base64 URL")
    if len(value) > MAX_BYTES * 4 // 3 + 100:
        raise PhotoError(f"a photo may be at most {MAX_BYTES // (1024 * 1024)} MB")
    try:
        return base64.b64decode(value[m.end():], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PhotoError("the photo is not valid base64") from exc


def _gps(exif: Any) -> tuple[float | None, float | None]:
    """Decimal degrees from EXIF's GPS IFD (refs N/S, E/W), or (None, None)."""
    try:
        gps = exif.get_ifd(0x8825)
    except Exception:  # noqa: BLE001 - broken EXIF: no position, the photo is still fine
        return None, None
    if not gps or 2 not in gps or 4 not in gps:
        return None, None

    def deg(v: Any) -> float:
        d, m, s = (float(x) for x in v)
        return d + m / 60 + s / 3600

    try:
        lat, long = deg(gps[2]), deg(gps[4])
    except (TypeError, ValueError, ZeroDivisionError):
        return None, None
    if str(gps.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(gps.get(3, "E")).upper().startswith("W"):
        long = -long
    if not (-90 <= lat <= 90 and -180 <= long <= 180) or (lat == 0 and long == 0):
        return None, None
    return lat, long


def store_photo(data: bytes, directory: Path) -> StoredPhoto:
    """Check ``data`` is a photo, read its EXIF position, save it without metadata as JPEG."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise PhotoError(f"a photo may be at most {MAX_BYTES // (1024 * 1024)} MB")
    Image.MAX_IMAGE_PIXELS = 40_000_000  # decompression bombs are refused
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ALLOWED:
            raise PhotoError(f"unsupported image type {img.format}")
        lat, long = _gps(img.getexif())
        img = ImageOps.exif_transpose(img)
        img.thumbnail((MAX_SIDE, MAX_SIDE))
        clean = Image.new("RGB", img.size)
        clean.paste(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise PhotoError("not an image") from exc
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.jpg"
    path = directory / name
    clean.save(path, "JPEG", quality=85)  # no exif= argument: no metadata written
    return StoredPhoto(name, path, lat, long)
