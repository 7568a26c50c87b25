"""The records a spool holds. Each is a msgpack array that starts with (sequence number, kind, time).

Plain values, not objects, on purpose: ``run.log()`` encodes one per call straight into the spool
(sdk/run.py, sdk/shaped.py), so their shape is the hot path's contract.

In the spool, a metrics record is one frame holding a msgpack array of four items::

    [{key: value, ...}, seq, time, step]

where ``seq`` is UNNUMBERED: a record's sequence number is its address in the spool (see
spool/segment.py), which the reader knows. Readers turn the four items back into one map
with reserved keys (control characters, which no metric name may contain), see ``unflatten``::

    {key: value, ..., "\x00": seq, "\x01": time, "\x02": step}     metrics

Every other record is a single tuple (rare, so it does not matter)::

    (seq, "l", time, stream, text)                      a log line (stream: stdout, stderr, system)
    (seq, "e", time, {"event": ..., ...})               a lifecycle event: start, end (see sdk/run.py)
    (seq, "c", time, {key: value or None, ...})         config changes (None removes a key)
    (seq, "s", time, {key: value or None, ...})         summary changes
    (seq, "n", time, text)                              a note, appended to the run's notes
    (seq, "t", time, [added], [removed])                labels
    (seq, "a", time, path, size, sha256, content_ref)   an artifact, already in the artifact store
    (seq, "h", time)                                    a heartbeat
    (seq, "i", time, kind, sha256, source_run, source_path, mount)   an input the run consumed
"""

from __future__ import annotations

from typing import Any

METRICS = "m"
LOG = "l"
EVENT = "e"
CONFIG = "c"
SUMMARY = "s"
NOTE = "n"
LABELS = "t"
ARTIFACT = "a"
HEARTBEAT = "h"
INPUT = "i"

#: What a producer puts where a record's sequence number goes: the reader numbers each record by
#: its address in the spool (spool/segment.py), so the spool's order and numbers agree.
UNNUMBERED = 0

SEQ = "\x00"
TIME = "\x01"
STEP = "\x02"
RESERVED = (SEQ, TIME, STEP)

KINDS = frozenset({METRICS, LOG, EVENT, CONFIG, SUMMARY, NOTE, LABELS, ARTIFACT, HEARTBEAT, INPUT})


def seq_of(record: Any) -> int:
    """The sequence number of any record."""
    return int(record[SEQ] if type(record) is dict else record[0])


def kind_of(record: Any) -> str:
    return METRICS if type(record) is dict else str(record[1])


def time_of(record: Any) -> float:
    return float(record[TIME] if type(record) is dict else record[2])


def unflatten(items: list[Any]) -> list[Any]:
    """Queue or spool items -> records: each metrics group becomes one map with reserved keys."""
    out: list[Any] = []
    i, n = 0, len(items)
    while i < n:
        item = items[i]
        if type(item) is dict:
            item[SEQ], item[TIME], item[STEP] = items[i + 1], items[i + 2], items[i + 3]
            i += 4
        else:
            i += 1
        out.append(item)
    return out


def is_record_start(item: Any) -> bool:
    return type(item) is dict or type(item) is tuple or type(item) is list
