"""Registered models and references to them: what `runyard model` and `runyard serve` resolve.

    from runyard.models import resolve_model
    v = resolve_model(api, "model:digits@production")   # or a store: SqlStore, RemoteStore
    v.run_number, v.run_id, v.path, v.digest               # the run and the artifacts it points at

A reference is ``model:NAME`` (the newest version, also ``model:NAME@latest``), ``model:NAME@3``
(version 3) or ``model:NAME@ALIAS`` (the version the alias names now). A version is immutable: it
keeps pointing at the same run and path, and its digest says whether the artifacts there changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from runyard.errors import InvalidArgument
from runyard.names import LATEST, is_number, validate_model_name

if TYPE_CHECKING:
    from runyard.api import Api
    from runyard.store.api import ArtifactEntry, ModelVersion

__all__ = ["PREFIX", "ModelRef", "ModelSource", "is_model_ref", "resolve_model", "verify_digest"]

#: What starts a model reference, where a run reference could stand too (``runyard serve``).
PREFIX = "model:"


class ModelSource(Protocol):
    """What resolves a model version: the local store (``SqlStore``) and its remote twin (``RemoteStore``)."""

    def model_version(self, name: str, selector: str | None = None) -> ModelVersion: ...


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``model:NAME[@VERSION|@ALIAS]``; ``selector`` None means the newest version."""

    name: str
    selector: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        if not isinstance(text, str) or not text.startswith(PREFIX):
            raise InvalidArgument(f"{str(text)[:80]!r} is not a model reference: write model:NAME, model:NAME@VERSION "
                                  "or model:NAME@ALIAS (e.g. model:digits@production)")
        name, at, selector = text[len(PREFIX):].partition("@")
        validate_model_name(name)
        if not at or selector == LATEST:
            return cls(name)
        if not selector:
            raise InvalidArgument(f"{text!r}: nothing after @; give a version number or an alias")
        if is_number(selector):
            if int(selector) < 1:
                raise InvalidArgument(f"{text!r}: versions are numbered from 1")
            return cls(name, str(int(selector)))
        try:
            validate_model_name(selector)  # an alias's characters are a name's
        except InvalidArgument:
            raise InvalidArgument(f"{text!r}: {selector[:80]!r} is neither a version number nor an alias") from None
        return cls(name, selector)

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}" + (f"@{self.selector}" if self.selector is not None else "")


def is_model_ref(text: str) -> bool:
    """Whether ``text`` is meant as a model reference (``model:...``) rather than ``RUN:PATH``."""
    return text.startswith(PREFIX)


def resolve_model(source: ModelSource | Api, reference: str | ModelRef) -> ModelVersion:
    """The version ``reference`` names, from the store of ``source`` (an ``Api``, local or through a
    server, or a store). Raises ``InvalidArgument`` for a malformed reference and ``NotFound``, with
    the models, versions or aliases that exist, for one that names nothing."""
    ref = reference if isinstance(reference, ModelRef) else ModelRef.parse(reference)
    from runyard.api import Api

    store: ModelSource = source.store if isinstance(source, Api) else source
    return store.model_version(ref.name, ref.selector)


def verify_digest(version: ModelVersion, entries: list[ArtifactEntry]) -> bool:
    """Whether the run's artifacts (``entries``, as ``list_artifacts`` gives them) under the version's
    path are still what they were when it was registered."""
    from runyard.store.api import entries_digest, entries_under

    return entries_digest(entries_under(entries, version.path)) == version.digest
