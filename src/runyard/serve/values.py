"""Values between JSON and a handler: images decoded (Pillow, numpy) and outputs made JSON-able.

Loaded by the model server only: a training script that imports ``runyard.serve`` never pays for
numpy or Pillow through it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import io
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runyard.serve.signature import MAX_PIXELS, Field, InputError

#: Pixels the images of the request being decoded may still hold (``pixel_budget``): one limit for
#: a whole batch, not one per image (a thousand small PNGs of 40 M pixels each fill any memory).
_BUDGET: contextvars.ContextVar[list[int]] = contextvars.ContextVar("runyard_serve_pixel_budget")
#: The image formats read: the common ones, not every decoder Pillow has (EPS runs Ghostscript).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")


@contextlib.contextmanager
def pixel_budget(pixels: int = MAX_PIXELS) -> Iterator[None]:
    """Within: the images decoded hold at most ``pixels`` in all."""
    token = _BUDGET.set([pixels])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _spend(f: Field, pixels: int) -> None:
    budget = _BUDGET.get(None)
    if budget is None:
        return
    budget[0] -= pixels
    if budget[0] < 0:
        raise InputError(f.name, f"the images of one request hold at most {MAX_PIXELS} pixels in all")

if TYPE_CHECKING:
    import numpy as np


def image_input(f: Field, value: Any) -> np.ndarray:
    """An image input as the handler gets it: uint8 pixels, ``(h, w)`` grey or ``(h, w, 3)`` RGB,
    of the declared size and mode. Accepted: base64 PNG/JPEG (or a ``data:`` URL of one), raw bytes
    (a multipart upload), or rows of pixel values 0-255."""
    import numpy as np

    if isinstance(value, list):
        try:
            pixels = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(f.name, "rows of pixels must all be the same length, of numbers") from None
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)) or pixels.size == 0:
            raise InputError(f.name, f"rows of pixels: expected (height, width) or (height, width, 3), got shape "
                             f"{pixels.shape}")
        if pixels.size > MAX_PIXELS or not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise InputError(f.name, "pixels must be numbers from 0 to 255")
        _spend(f, pixels.size)
        if (pixels.ndim == 2 and f.spec.mode in (None, "L") and f.spec.width in (None, pixels.shape[1])
                and f.spec.height in (None, pixels.shape[0])):
            return pixels.astype(np.uint8)  # already what the handler gets: no round trip through Pillow
        picture = _pillow_from_array(pixels.astype(np.uint8))
    elif isinstance(value, str | bytes):
        picture = _pillow_from_bytes(f, _raw(f, value))
    else:
        raise InputError(f.name, "expected an image: base64 PNG/JPEG, a data: URL, or rows of pixels")
    mode = f.spec.mode or ("L" if picture.mode in ("L", "LA", "1", "I", "I;16", "F") else "RGB")
    if picture.mode != mode:
        picture = _flatten(picture).convert(mode)
    if f.spec.width is not None or f.spec.height is not None:
        size = (f.spec.width or picture.width, f.spec.height or picture.height)
        if picture.size != size:
            from PIL import Image

            picture = picture.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(picture, dtype=np.uint8)


def _raw(f: Field, value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InputError(f.name, "a data: URL of an image must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f.name, "not valid base64 (an image is sent as base64 PNG/JPEG, or a data: URL)") from None


def _pillow_from_bytes(f: Field, raw: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(raw), formats=list(FORMATS))
        if picture.width * picture.height > MAX_PIXELS:
            raise InputError(f.name, f"the image is {picture.width}x{picture.height}: at most {MAX_PIXELS} pixels")
        _spend(f, picture.width * picture.height)
        picture.load()
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InputError(f.name, "not an image this server can read (PNG, JPEG, GIF, BMP or WebP)") from None
    except Exception as e:  # noqa: BLE001 - a decoder's own failure on a crafted file is a bad input
        raise InputError(f.name, f"a broken image ({type(e).__name__})") from None
    return picture


def _pillow_from_array(pixels: Any) -> Any:
    from PIL import Image

    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return Image.fromarray(pixels)


def _flatten(picture: Any) -> Any:
    """Transparency over white, as a browser shows it (a drawn digit on a clear canvas stays a digit)."""
    from PIL import Image

    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return picture


class OutputError(TypeError):
    """What ``predict`` returned does not match its declared output: a 500 that says so."""


def output_value(kind: str, value: Any) -> Any:
    """``predict``'s return value as JSON-able data for its declared type."""
    value = _plain(value)
    if kind in ("number", "integer"):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OutputError(f"predict returned {type(value).__name__}, declared a number")
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if kind == "scores":
        if isinstance(value, list):
            value = {str(i): v for i, v in enumerate(_flat(value))}
        if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
            raise OutputError("predict declared scores: return {label: score} or a list of scores")
        return {str(k): float(v) for k, v in value.items()}
    if kind == "numbers":
        if not isinstance(value, list):
            raise OutputError(f"predict returned {type(value).__name__}, declared a list of numbers")
        return _flat(value)
    if kind == "text":
        return value if isinstance(value, str) else str(value)
    if kind == "image":
        return _png_url(value)
    if kind == "table":
        return _table(value)
    return value


def _flat(values: list[Any]) -> list[Any]:
    while len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    return values


def _plain(value: Any) -> Any:
    """numpy arrays and scalars, and pandas frames, as plain Python."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return {"columns": [str(c) for c in value.columns], "rows": value.astype(object).values.tolist()}
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    if isinstance(value, dict):
        return {(k.item() if hasattr(k, "item") else k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _table(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and "columns" in value and "rows" in value:
        return {"columns": list(value["columns"]), "rows": list(value["rows"])}
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k in r))
        return {"columns": [str(c) for c in columns], "rows": [[r.get(c) for c in columns] for r in value]}
    raise OutputError("predict declared a table: return a list of dicts or a DataFrame")


def _png_url(value: Any) -> str:
    import numpy as np
    from PIL import Image

    try:
        pixels = np.asarray(value)
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels)
    except (TypeError, ValueError) as e:
        raise OutputError(f"predict declared an image: return an array of pixels ({e})") from None
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
