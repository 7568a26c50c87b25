"""Spool frames for the usual ``log()`` call, made by a function built for one set of metric names.

A training loop logs the same names, all floats, at every step. msgpack walks the map and asks each
key and value for its type on every call; a function made for those names (as ``dataclasses``
makes ``__init__``) fetches each value by name, checks that it is a float, and packs the whole
record with one precompiled ``struct``. The bytes are msgpack's own encoding of the metrics record
``[{name: value, ...}, 0, time, step]`` (spool/records.py), with the step always as a 64-bit
integer, so every reader, and ingest/columns.py's column decoder, reads them unchanged.

Anything else (another name, a value that is not a float, a step outside 0..2**64-1) makes the
function return None, and ``log()`` takes its general path.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from runyard.spool.segment import FRAME, MARK

#: At most this many names get a function of their own (larger records take the general path,
#: where msgpack's per-key cost is small next to the rest).
MAX_NAMES = 64

Encoder = Callable[[dict[str, Any], int], "bytes | None"]


def _msgpack_str(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) < 32:
        return bytes([0xA0 | len(data)]) + data
    if len(data) < 256:
        return bytes([0xD9, len(data)]) + data
    return b"\xda" + struct.pack(">H", len(data)) + data


def _map_header(count: int) -> bytes:
    return bytes([0x80 | count]) if count < 16 else b"\xde" + struct.pack(">H", count)


def encoder_for(names: tuple[str, ...]) -> Encoder:
    """A function ``(metrics, step) -> frame or None`` for dicts holding exactly ``names``."""
    if not 0 < len(names) <= MAX_NAMES:
        raise ValueError(f"encoder_for: 1 to {MAX_NAMES} names, not {len(names)}")
    # Constant bytes between the numbers: array of 4 and map header, then each name and the float64
    # marker, then seq 0 with the time's float64 marker, then the uint64 marker before the step.
    pieces = [b"\x94" + _map_header(len(names)) + _msgpack_str(names[0]) + b"\xcb"]
    pieces += [_msgpack_str(name) + b"\xcb" for name in names[1:]]
    pieces.append(b"\x00\xcb")
    pieces.append(b"\xcf")
    layout = ">" + "".join(f"{len(piece)}sd" for piece in pieces[:-1]) + f"{len(pieces[-1])}sQ"
    record = struct.Struct(layout)
    values = [f"v{i}" for i in range(len(names))]
    constants = [f"c{i}" for i in range(len(pieces))]
    packed = ", ".join(f"{c}, {v}" for c, v in zip(constants, [*values, "time()", "step"], strict=True))
    source = "\n".join([
        "def encode(metrics, step):",
        f"    if len(metrics) != {len(names)} or not 0 <= step < 18446744073709551616:",
        "        return None",
        "    try:",
        *[f"        {v} = metrics[{name!r}]" for v, name in zip(values, names, strict=True)],
        "    except KeyError:",
        "        return None",
        f"    if {' and '.join(f'type({v}) is float' for v in values)}:",
        f"        payload = pack({packed})",
        # One struct call for the frame's header (the length is the same every time): cheaper than
        # joining a constant prefix with the checksum's bytes.
        f"        return head(mark, {record.size}, checksum(payload)) + payload",
        "    return None",
    ])
    scope: dict[str, Any] = {"pack": record.pack, "time": time.time, "checksum": zlib.adler32,
                             "head": FRAME.pack, "mark": MARK, **dict(zip(constants, pieces, strict=True))}
    exec(compile(source, f"<runyard log() frame for {len(names)} names>", "exec"), scope)  # noqa: S102
    encode: Encoder = scope["encode"]
    return encode
