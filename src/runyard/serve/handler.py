"""The user's handler: ``FILE.py:Class`` in the served code, made once and loaded once.

runyard never unpickles a model itself: ``load(model_dir)`` is the handler's code, run in the
environment of the run that trained it. A handler is any class with::

    def load(self, model_dir: str) -> None          # optional: once, before the server is ready
    def predict(self, ...) -> ...                    # per request, with the declared inputs
    def predict_batch(self, inputs: list[dict]) -> list   # optional: a JSON list sent to /predict
    examples = [{...}, ...]                          # optional: one-click inputs on the demo page
    concurrency = 4                                  # optional: predictions at once (threads)
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.errors import InvalidArgument
from runyard.serve.signature import Signature, signature_of

HANDLER_FORM = re.compile(r"(?P<file>[^:]+\.py):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)")
#: Predictions at once when the handler does not say (``concurrency``): sklearn and torch models
#: predict from several threads; a handler that cannot sets ``concurrency = 1``.
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class HandlerRef:
    file: str
    cls: str

    def __str__(self) -> str:
        return f"{self.file}:{self.cls}"


def parse_ref(text: str) -> HandlerRef:
    matched = HANDLER_FORM.fullmatch(text.strip())
    if matched is None:
        raise InvalidArgument(f"--handler {text!r}: expected FILE.py:Class, e.g. serve.py:Model")
    file = matched.group("file")
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise InvalidArgument(f"--handler {text!r}: the file is a path inside the served code, like serve.py "
                              "or models/serve.py")
    return HandlerRef(file, matched.group("cls"))


def serve_section(root: Path) -> dict[str, Any]:
    """``[serve]`` of the served code's runyard.toml (empty when there is none)."""
    import tomllib

    path = root / "runyard.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{path}: cannot read it ({e})") from None
    section = data.get("serve", {})
    if not isinstance(section, dict):
        raise InvalidArgument(f"{path}: [serve] must be a table")
    return section


def handler_class(root: Path, ref: HandlerRef) -> type:
    """Import ``ref.file`` from ``root`` (its directory first on sys.path, so that it imports its
    neighbours, as when the script ran) and return the class."""
    path = (root / ref.file).resolve()
    if not path.is_file():
        raise InvalidArgument(f"--handler {ref}: no file {ref.file} in the served code ({root})")
    sys.path.insert(0, str(path.parent))
    if str(root.resolve()) not in sys.path:
        sys.path.insert(1, str(root.resolve()))
    module_name = f"runyard_handler_{re.sub(r'[^0-9A-Za-z_]', '_', ref.file[:-3])}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)  # the user's code: its errors reach the run's log as they are
    found = getattr(module, ref.cls, None)
    if not isinstance(found, type):
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and hasattr(v, "predict")
                         and getattr(v, "__module__", None) == module_name)
        raise InvalidArgument(f"--handler {ref}: {ref.file} has no class {ref.cls}"
                              + (f"; classes with predict(): {', '.join(classes)}" if classes else ""))
    return found


@dataclass
class Handler:
    """A handler instance and what is known of it."""

    instance: Any
    signature: Signature
    concurrency: int
    batch: bool

    def load(self, model_dir: str) -> None:
        loader = getattr(self.instance, "load", None)
        if callable(loader):
            loader(model_dir)

    def predict(self, inputs: dict[str, Any]) -> Any:
        return self.instance.predict(**inputs)

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        if self.batch:
            outputs = list(self.instance.predict_batch(inputs))
            if len(outputs) != len(inputs):
                raise ValueError(f"predict_batch returned {len(outputs)} outputs for {len(inputs)} inputs")
            return outputs
        return [self.instance.predict(**one) for one in inputs]


def make_handler(root: Path, ref: HandlerRef | str) -> Handler:
    """The handler of ``ref`` in the code at ``root``, its signature read (not yet loaded)."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    cls = handler_class(root, ref)
    section = serve_section(root)
    schema = section if "inputs" in section and section.get("handler") in (None, str(ref)) else None
    signature = signature_of(cls, schema)
    concurrency = getattr(cls, "concurrency", DEFAULT_CONCURRENCY)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 256:
        raise InvalidArgument(f"handler {ref.cls}: concurrency must be a whole number from 1 to 256")
    return Handler(cls(), signature, concurrency, callable(getattr(cls, "predict_batch", None)))
