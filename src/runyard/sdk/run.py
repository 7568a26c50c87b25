"""Run: what ``runyard.init()`` returns. Logging writes a record into the spool; it never waits on I/O.

``log()`` is the hot path: it checks every key and value (a clear ``TypeError`` naming the key, in
the caller), stamps the step and the wall time, encodes the record and copies it into the spool's
memory-mapped segment (sdk/writer.py): when it returns, the record survives the death of the
process. A tensor is not read in the caller (on a GPU that would wait for the device): it is queued
as it is and converted off the training thread (``Writer.defer``). Ingesting happens elsewhere.

Apart from mistakes in what the caller passes (reported at once), the SDK does not raise into
training: a failure of its own is counted in ``run.errors`` and reported on stderr once. With
``RUNYARD_STRICT=1`` (the test suite sets it) it raises instead.
"""

from __future__ import annotations

import numbers
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.errors import InvalidArgument
from runyard.names import validate_end_status, validate_key, validate_label, validate_metric_key, validate_relpath
from runyard.sdk import shaped
from runyard.spool import records
from runyard.spool.segment import FRAME, MARK

if TYPE_CHECKING:
    from runyard.config import Settings
    from runyard.sdk.writer import Writer

_time = time.time
_pack_frame = FRAME.pack
_adler32 = zlib.adler32


def _frame(payload: bytes) -> bytes:
    return _pack_frame(MARK, len(payload), _adler32(payload)) + payload


class _RecordedDict(MutableMapping[str, Any]):
    """A dict whose changes are also written to the run as records of one kind."""

    def __init__(self, run: Run, kind: str, initial: Mapping[str, Any] | None = None) -> None:
        self._run = run
        self._kind = kind
        self._data: dict[str, Any] = dict(initial or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._run._emit(self._kind, {key: None})

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        change = {**dict(other), **kwargs}
        for key in change:
            validate_key(key, self._kind_name)  # as ingest checks it (ingest/fields.py)
        self._data.update(change)
        self._run._emit(self._kind, change)

    @property
    def _kind_name(self) -> str:
        return "config" if self._kind == records.CONFIG else "summary"

    def __repr__(self) -> str:
        return f"{self._kind_name}({self._data!r})"


class Summary(_RecordedDict):
    """The run's summary: by default each metric's last logged value; set a key to override it.
    (In the store, a later log() of that metric replaces the override again.)"""

    def _view(self) -> dict[str, Any]:
        return {**self._run._writer.latest_metrics(), **self._data}

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __repr__(self) -> str:
        return f"summary({self._view()!r})"


#: Sets of metric names that get a function of their own in one run (sdk/shaped.py).
MAX_SHAPES = 32


def _no_encoder(metrics: dict[str, Any], step: int) -> None:
    return None


#: Stands for a value to be converted off the training thread (a tensor): see ``Writer.defer``.
DEFERRED = object()


def _as_number(key: str, value: Any) -> Any:
    """``value`` as a float, or DEFERRED for a one-element tensor (read later, off this thread);
    a TypeError naming ``key`` for anything else."""
    if isinstance(value, numbers.Real):  # int, bool, float subclasses, numpy scalars
        return float(value)
    kind = type(value)
    numel = getattr(value, "numel", None)
    if callable(numel) and callable(getattr(value, "item", None)):  # a tensor: PyTorch's API
        count = numel()
        if count != 1:
            raise TypeError(f"run.log(): metric {key!r} must be a single number, not a tensor of {count} "
                            "elements")
        return DEFERRED
    if kind.__module__ == "numpy" and callable(getattr(value, "item", None)):  # an array: no device
        if getattr(value, "size", 0) != 1:
            raise TypeError(f"run.log(): metric {key!r} must be a single number, not an array of shape "
                            f"{getattr(value, 'shape', '?')}")
        inner = value.item()
        if isinstance(inner, numbers.Real):
            return float(inner)
    raise TypeError(f"run.log(): metric {key!r} must be a number, not {kind.__name__} ({value!r:.60})")


class Run:
    """A run being logged from this process. Create it with ``runyard.init()``."""

    def __init__(self, settings: Settings, writer: Writer, run_id: str, project: str, name: str | None,
                 attached: bool, config: Mapping[str, Any] | None = None) -> None:
        self.id = run_id
        self.project = project
        self.name = name
        self.attached = attached
        self.settings = settings
        #: Failures the SDK absorbed so that training could go on (see ``last_error``).
        self.errors = 0
        self.last_error: BaseException | None = None
        import msgpack

        self._writer = writer
        # log()'s own packer: reused (making one per call costs more than packing), never shared
        # with another producer. Its pack() is one C call, so a second thread's log() cannot mix in.
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._step = 0
        self._keys: set[str] = set()
        #: Functions that make the frame of a record with these names, all floats (sdk/shaped.py);
        #: ``_encode`` is the one the last call used.
        self._encoders: dict[tuple[str, ...], shaped.Encoder] = {}
        self._encode: shaped.Encoder = _no_encoder
        #: Types seen to be tensors (a ``numel`` and an ``item``): read off the training thread.
        self._tensor_types: set[type] = set()
        self._finished = False
        self._finishing = threading.Lock()
        self._warned_after_finish = False
        self._on_finish: list[Any] = []
        self.config = _RecordedDict(self, records.CONFIG, config)
        self.summary = Summary(self, records.SUMMARY)
        self.artifacts_pending = 0

    # -- the hot path -----------------------------------------------------------------------------

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metric values at a step (default: one past the previous step). Returns at once,
        with the record in the spool (a tensor value: once converted, off this thread)."""
        if self._finished:
            self._after_finish()
            return
        if step is None:
            step = self._step
        elif type(step) is not int:
            step = self._as_step(step)
        if type(metrics) is not dict:
            metrics = self._as_dict(metrics)
        writer = self._writer
        if not writer.deferring:
            frame = self._encode(metrics, step)  # None unless the names it was made for, all floats
            if frame is None:
                encode = self._encoders.get(tuple(metrics))
                if encode is not None:  # another set of names seen before: use its function
                    self._encode = encode
                    frame = encode(metrics, step)
            if frame is not None:  # the usual call
                self._step = step + 1
                try:
                    writer.put(frame)
                except ValueError:  # the segment is full: the writer goes on in the next one
                    writer.full(frame)
                return
        self._log_checked(metrics, step)

    def _log_checked(self, metrics: dict[Any, Any], step: int) -> None:
        """log() for anything but known names with float values: every key and value checked."""
        record: dict[str, Any] = {}
        defer = False
        plain = True  # every value a float as given: the next call with these names takes the fast path
        keys, tensors = self._keys, self._tensor_types
        for key, value in metrics.items():
            if key not in keys:
                self._new_key(key)
            kind = type(value)
            if kind is float:
                record[key] = value
                continue
            plain = False
            if kind not in tensors:
                number = _as_number(key, value)
                if number is not DEFERRED:
                    record[key] = number
                    continue
                tensors.add(kind)  # the next one of this type skips the questions above
            count = value.numel()  # metadata: no device synchronisation
            if count != 1:
                raise TypeError(f"run.log(): metric {key!r} must be a single number, not a tensor of {count} "
                                "elements")
            detach = getattr(value, "detach", None)
            record[key] = detach() if detach is not None else value  # no autograd graph kept alive
            defer = True
        writer = self._writer
        if defer or writer.deferring:
            self._step = step + 1
            writer.defer(record, _time(), step)
            return
        try:
            payload = self._pack((record, 0, _time(), step))
        except OverflowError:
            raise ValueError(f"run.log(): step {step} is beyond a 64-bit integer") from None
        self._step = step + 1
        writer.write(_frame(payload))
        if plain:
            self._learn(tuple(record))

    def _learn(self, names: tuple[str, ...]) -> None:
        """Make ``log()``'s function for these names (sdk/shaped.py), for a bounded number of sets."""
        encode = self._encoders.get(names)
        if encode is None:
            if len(self._encoders) >= MAX_SHAPES or len(names) > shaped.MAX_NAMES:
                return
            encode = self._encoders[names] = shaped.encoder_for(names)
        self._encode = encode

    def _as_step(self, step: Any) -> int:
        if isinstance(step, numbers.Integral) and not isinstance(step, bool):
            return int(step)
        if isinstance(step, float) and step.is_integer():
            return int(step)
        raise TypeError(f"run.log(): step must be an integer, not {type(step).__name__} ({step!r:.60})")

    def _as_dict(self, metrics: Any) -> dict[str, Any]:
        if isinstance(metrics, Mapping):
            return dict(metrics)
        raise TypeError(f"run.log() takes a mapping of metric names to numbers, not {type(metrics).__name__}")

    def _new_key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"run.log(): metric names must be strings, not {type(key).__name__} ({key!r:.60})")
        validate_metric_key(key)
        self._keys.add(key)

    def _after_finish(self) -> None:
        if not self._warned_after_finish:
            self._warned_after_finish = True
            warnings.warn(f"run {self.id} is finished; call runyard.init() for a new run. "
                          "Values logged after finish() are not recorded.", stacklevel=3)

    # -- everything else --------------------------------------------------------------------------

    def _emit(self, kind: str, *fields: Any) -> None:
        if self._finished:
            self._after_finish()
            return
        self._writer.queue.append((records.UNNUMBERED, kind, _time(), *fields))

    def note(self, text: str) -> None:
        """Append a paragraph of Markdown to the run's notes."""
        if not isinstance(text, str):
            raise TypeError(f"run.note() takes a string, not {type(text).__name__}")
        self._emit(records.NOTE, text)

    def alert(self, name: str, when: str, **rule: Any) -> None:
        """Raise an alert when this run's metrics or state say so (the rules of alerts/spec.py).

        ``run.alert("loss-nan", "nan", metric="loss", action="stop")`` stops the run when its loss
        becomes NaN; ``run.alert("acc-drop", "drop", metric="acc", by="10%")`` notifies when accuracy
        falls 10% below its best. ``for`` is a Python keyword: write ``for_="10m"``. A malformed rule
        raises ``InvalidArgument`` here, at once; a rule of the same name replaces the earlier one.
        """
        from runyard.alerts.spec import file_form, validate

        data = {"name": name, "when": when, **{("for" if k == "for_" else k): v for k, v in rule.items()}}
        try:
            checked = validate(data)
        except ValueError as e:
            raise InvalidArgument(f"run.alert(): {e}") from None
        # The checked rule, in the file's keys: plain numbers and strings, whatever the caller passed.
        self._emit(records.EVENT, {"event": "alert", "rule": file_form(**checked)})

    def label(self, *labels: str) -> None:
        """Add labels to the run (``unlabel`` removes them)."""
        self._emit(records.LABELS, [validate_label(x) for x in labels], [])

    def unlabel(self, *labels: str) -> None:
        self._emit(records.LABELS, [], [validate_label(x) for x in labels])

    def log_artifact(self, path: str | Path, name: str | None = None) -> None:
        """Copy a file or a directory into the run's artifacts, in the background.

        The content is copied as it is now (later changes to the file are not taken); ``name`` is
        the path inside the run (default: the file or directory name).
        """
        source = Path(path)
        if not source.exists():
            raise FileNotFoundError(f"run.log_artifact(): {source} does not exist")
        target = validate_relpath(name if name is not None else source.resolve().name)
        from runyard.sdk import staging

        self.artifacts_pending += 1
        staging.copy_in_background(self, source, target)

    def _record_artifact(self, path: str, size: int, sha256: str) -> None:
        self._emit(records.ARTIFACT, path, size, sha256, f"sha256:{sha256}")

    def _absorb(self, error: BaseException, raise_strict: bool = True) -> None:
        """A failure inside the SDK: count it, say it once, raise only in strict mode (and only in
        the caller's thread; ``finish()`` raises what background threads absorbed)."""
        self.errors += 1
        self.last_error = error
        if self.settings.strict and raise_strict:
            raise error
        if self.errors == 1:
            print(f"runyard: logging problem (training continues): {error!r}", file=sys.__stderr__)

    @property
    def step(self) -> int:
        """The step the next ``log()`` without ``step=`` will use."""
        return self._step

    @property
    def number(self) -> int | None:
        """The run's number in the store, once the store has taken in the run (None until then)."""
        from runyard.spool.acks import read_ack

        return read_ack(self._writer.directory, self._writer.writer_id).run_number

    def wait_ingested(self, timeout: float) -> bool:
        """Wait until everything written so far is in the store; False on timeout."""
        from runyard.spool.acks import read_ack

        target = self._writer.position()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            ack = read_ack(self._writer.directory, self._writer.writer_id)
            if ack.position >= target or ack.complete:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    def finish(self, status: str | None = None, exit_code: int | None = None, wait: bool = True) -> None:
        """End the run: write what waits, record the final state, wait (up to ``finish_timeout`` in
        all) for the store to have it all. Called at interpreter exit if you do not."""
        # Checked as ingest checks it, before anything ends: a run says only how it ended.
        validate_end_status(status or "finished", "finish(status=...)")
        with self._finishing:
            if self._finished:
                return
            timeout = self.settings.finish_timeout
            deadline = time.monotonic() + timeout
            for hook in reversed(self._on_finish):
                try:
                    hook()
                except Exception as e:  # noqa: BLE001 - finishing must finish
                    self._absorb(e)
            from runyard.sdk import staging

            if not staging.wait_for_copies(self, max(0.0, deadline - time.monotonic())):
                self._absorb(TimeoutError("artifact copies did not finish in time"), raise_strict=False)
            final = status or "finished"
            event: dict[str, Any] = {"event": "detach" if self.attached else "end", "status": final}
            if exit_code is not None:
                event["exit_code"] = exit_code
            self._emit(records.EVENT, event)
            self._finished = True
            writer = self._writer
            written = writer.close(max(0.0, deadline - time.monotonic()))
            if not written:
                self._absorb(OSError(f"{writer.pending():,} records of run {self.id} could not be written to its spool "
                                     f"in {writer.directory} and are lost" +
                                     (f", besides {writer.lost_records:,} lost earlier while memory was full"
                                      if writer.lost_records else "") +
                                     (f" ({writer.last_error})" if writer.last_error else "")), raise_strict=False)
            if wait:
                from runyard.sdk.agent_launch import ensure_agent

                ensure_agent(self.settings)  # ingests, or with RUNYARD_SERVER ships, what is left
                if not self.wait_ingested(max(0.0, deadline - time.monotonic())):
                    where = "shipped to the server" if self.settings.server else "ingested"
                    print(f"runyard: run {self.id} is still being {where} after finish_timeout ({timeout:g} s); "
                          f"what was logged is in its spool ({writer.directory}) and `runyard sync` finishes it",
                          file=sys.__stderr__)
            from runyard.sdk import current

            current.clear(self)
            if self.settings.strict and self.last_error is not None:
                raise self.last_error

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish()
        else:
            failed = not (exc_type is SystemExit and exc.code in (0, None))
            if failed and exc_type is not SystemExit:
                import traceback

                text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
                for line in text.splitlines():
                    self._emit(records.LOG, "stderr", line)
            self.finish(status="failed" if failed else "finished")

    def __repr__(self) -> str:
        return f"<runyard.Run {self.id} project={self.project!r} name={self.name!r}>"

