"""A run shown live in a notebook: status, elapsed time, latest metrics with sparklines, a link to
the run's page and a Stop button.

``show(number)`` displays it: an anywidget (JupyterLab, Notebook 7, VS Code, Colab) with a
text/html fallback for frontends without widgets, or plain text lines where no kernel can carry
widgets (a terminal IPython). The widget's state is read by a daemon thread of its own once a
second, through ``runyard.Api``: a thread, not a task on the kernel's event loop, because a cell
that computes (``time.sleep``, a training loop) holds that loop and the widget must keep moving
meanwhile. Its updates are comm messages, which a thread may send (they are not outputs, which
ipykernel 7 ties to the cell that made them). The thread ends with the run.
"""

from __future__ import annotations

import html
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runyard.api import Api
    from runyard.config import Settings

#: Seconds between two reads of a run that has not ended.
INTERVAL = 1.0
#: Metrics shown (user metrics first, then system/... ones), and points in each sparkline.
MAX_METRICS = 6
SPARK_POINTS = 40
#: Port `runyard ui` serves this machine's dashboard on by default (its page links there).
UI_PORT = 8765


@dataclass(frozen=True)
class Metric:
    key: str
    last: float | None
    step: int | None
    spark: tuple[float, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """What the widget shows of a run at one moment."""

    number: int
    title: str
    status: str
    message: str
    #: Seconds since the run started (to its end once ended); None while it has not started.
    elapsed: float | None
    url: str
    metrics: tuple[Metric, ...] = field(default=())

    @property
    def ended(self) -> bool:
        return self.status in ("finished", "failed", "stopped", "timeout", "lost")


def run_url(settings: Settings, number: int) -> str:
    """The run's page: on the server when one is configured, else on this machine's `runyard ui`."""
    base = (settings.server or f"http://127.0.0.1:{UI_PORT}").rstrip("/")
    return f"{base}/runs/{number}"


def read(api: Api, number: int, now: float | None = None) -> Snapshot:
    """The run as the store has it now, with its latest metrics."""
    run = api.store.get_run(number)
    series = sorted(api.store.list_series(run.number), key=lambda s: (s.key.startswith("system/"), s.key))
    metrics = []
    for info in series[:MAX_METRICS]:
        spark: tuple[float, ...] = ()
        if info.count > 1:
            envelope = api.store.envelope(run.number, info.key, SPARK_POINTS)
            spark = tuple(float(v) for v in envelope.mean.tolist() if math.isfinite(v))  # NaN buckets left out
        metrics.append(Metric(info.key, info.last_value, info.last_step, spark))
    message = run.status_message or ""
    if run.exit_code is not None and run.status.value != "finished":
        message = f"exit code {run.exit_code}" + (f": {message}" if message else "")
    return Snapshot(run.number, run.display_name, run.status.value, message,
                    run.duration(time.time() if now is None else now), run_url(api.settings, run.number),
                    tuple(metrics))


def elapsed_text(seconds: float | None) -> str:
    if seconds is None:
        return "not started"
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def text_of(s: Snapshot) -> str:
    """One line for a terminal: ``run 3 unet: running 0:42  loss=0.31 acc=0.9``."""
    parts = [f"run {s.number} {s.title}: {s.status}", elapsed_text(s.elapsed)]
    if s.message:
        parts.append(f"({s.message})")
    parts += [f"{m.key}={_value(m.last)}" for m in s.metrics]
    return "  ".join(parts)


def html_of(s: Snapshot) -> str:
    """The fallback for frontends without widgets (nbviewer, GitHub, an exported page): the status
    and a link, every stored text escaped."""
    metrics = " ".join(f"{html.escape(m.key)}={_value(m.last)}" for m in s.metrics)
    return (f'<div class="runyard-run"><a href="{html.escape(s.url)}" target="_blank">run {s.number} '
            f"{html.escape(s.title)}</a>: <b>{html.escape(s.status)}</b> {elapsed_text(s.elapsed)}"
            f"{' ' + html.escape(s.message) if s.message else ''}{'<br>' + metrics if metrics else ''}</div>")


class Watcher:
    """Reads a run every ``interval`` seconds on a daemon thread and hands each changed Snapshot to
    ``changed``, until the run ends or ``cancel()``. The thread opens an Api of its own (a store
    connection belongs to the thread that made it)."""

    def __init__(self, number: int, changed: Callable[[Snapshot], None], settings: Settings | None = None,
                 interval: float = INTERVAL) -> None:
        self.number = number
        self._changed = changed
        self._settings = settings
        self._interval = interval
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"runyard-watch-{number}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        from runyard.api import Api
        from runyard.errors import NotFound

        last: Snapshot | None = None
        api = None
        try:
            api = Api(self._settings, catch_up=False)  # the agent ingests: reading must not race it
            while not self._cancelled.is_set():
                try:
                    now = read(api, self.number)
                except NotFound:  # removed (`runyard rm`): nothing more to show
                    return
                except Exception as e:  # noqa: BLE001 - a database busy, a server restarting: try again
                    now = None
                    if last is not None:
                        self._changed(_with_message(last, f"cannot read the run now: {e}"))
                if now is not None and now != last:
                    last = now
                    self._changed(now)
                if last is not None and last.ended:
                    return
                self._cancelled.wait(self._interval)
        finally:
            if api is not None:
                api.close()


def _with_message(s: Snapshot, message: str) -> Snapshot:
    from dataclasses import replace

    return replace(s, message=message)


_widget_class: Any = None


def widget_class() -> Any:
    """The anywidget class (built on first use: anywidget and traitlets load only here)."""
    global _widget_class
    if _widget_class is not None:
        return _widget_class
    import anywidget
    import traitlets

    class RunWidget(anywidget.AnyWidget):
        """A run, live. ``stop()`` (or the Stop button) stops it; ``close()`` stops watching."""

        _esm = (Path(__file__).parent / "widget.js").read_text()
        number = traitlets.Int(0).tag(sync=True)
        title = traitlets.Unicode("").tag(sync=True)
        status = traitlets.Unicode("queued").tag(sync=True)
        message = traitlets.Unicode("").tag(sync=True)
        elapsed = traitlets.Float(None, allow_none=True).tag(sync=True)
        url = traitlets.Unicode("").tag(sync=True)
        metrics: traitlets.List[dict[str, Any]] = traitlets.List([]).tag(sync=True)

        def __init__(self, number: int, settings: Settings | None = None, first: Snapshot | None = None,
                     **kwargs: Any) -> None:
            super().__init__(number=number, title=f"run {number}", **kwargs)
            self._settings = settings
            if first is not None:
                self._apply(first)
            self.on_msg(self._message)
            self.watcher = Watcher(number, self._apply, settings).start()

        def _apply(self, s: Snapshot) -> None:
            with self.hold_sync():  # one comm message per change, not one per trait
                self.title, self.status, self.message = s.title, s.status, s.message
                self.elapsed, self.url = s.elapsed, s.url
                # JSON has no NaN or infinity: the value goes as a number when finite, and as text always
                self.metrics = [{"key": m.key, "text": _value(m.last), "step": m.step, "spark": list(m.spark),
                                 "last": m.last if m.last is not None and math.isfinite(m.last) else None}
                                for m in s.metrics]

        def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
            if isinstance(content, dict) and content.get("type") == "stop":
                from runyard.errors import RunyardError

                try:
                    self.message = self.stop()
                except RunyardError as e:  # removed meanwhile, a server that refuses: said in the view
                    self.message = f"cannot stop it: {e}"

        def stop(self) -> str:
            """Stop the run, as `runyard stop` does; returns what happened, in words."""
            from runyard.api import Api

            with Api(self._settings, catch_up=False) as api:
                return api.stop(api.store.get_run(self.number))

        def close(self) -> None:
            self.watcher.cancel()
            super().close()

        def _repr_mimebundle_(self, **kwargs: Any) -> Any:
            bundle = super()._repr_mimebundle_(**kwargs)
            data = bundle[0] if isinstance(bundle, tuple) else bundle
            if isinstance(data, dict):
                data["text/html"] = html_of(Snapshot(self.number, self.title, self.status, self.message,
                                                     self.elapsed, self.url or "#"))
            return bundle

    _widget_class = RunWidget
    return RunWidget


def widgets_usable() -> bool:
    """True in a Jupyter kernel with anywidget installed; False in a terminal IPython or a plain
    Python, or without the notebook extra (then the commands print text)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return True


def show(number: int, settings: Settings | None = None, first: Snapshot | None = None) -> Any:
    """Display run ``number`` live: the widget in a notebook (returned), else one text line now.
    ``first`` is what to show until the widget's thread has read the run (read now if not given)."""
    from runyard.api import Api

    if first is None:
        with Api(settings, catch_up=False) as api:
            first = read(api, number)
    if widgets_usable():
        from IPython.display import display

        widget = widget_class()(number, settings, first)
        display(widget)  # type: ignore[no-untyped-call]
        return widget
    print(text_of(first))
    return None


def launched(number: int, name: str | None, settings: Settings) -> Snapshot:
    """What a run just queued looks like, without reading the store (a launch returns at once)."""
    return Snapshot(number, name or f"run {number}", "queued", "", None, run_url(settings, number))


def follow(number: int, settings: Settings | None = None, interval: float = INTERVAL) -> Snapshot:
    """Print a line each time the run changes, until it ends (for terminals; Ctrl-C stops watching,
    not the run). Returns the last Snapshot."""
    seen: list[Snapshot] = []
    done = threading.Event()

    def changed(s: Snapshot) -> None:
        seen.append(s)
        print(text_of(s), flush=True)
        if s.ended:
            done.set()

    watcher = Watcher(number, changed, settings, interval).start()
    try:
        while watcher.alive and not done.is_set():
            done.wait(0.2)
    finally:
        watcher.cancel()
    watcher.join(5)
    if not seen:
        raise RuntimeError(f"run {number} could not be read")
    return seen[-1]


def warm() -> None:
    """Import what the first widget needs, so that the first ``%%runyard run`` returns as fast as
    the next ones (called when the extension loads)."""
    if widgets_usable():
        widget_class()
