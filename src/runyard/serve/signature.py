"""What a handler's ``predict`` takes and returns, read once from its code, and its checks.

A signature comes from ``predict``'s annotations and ``Input(...)`` defaults (``declare.py``), or,
for a handler that annotates nothing, from a small schema: the class's ``inputs`` and ``output``
attributes, or ``[serve]`` in ``runyard.toml``::

    [serve]
    handler = "serve.py:Digits"
    output = "scores"
    [serve.inputs.image]
    type = "image"
    width = 8
    height = 8

The demo page and ``/openapi.json`` are built from it, and every request is checked against it
before the handler sees it: a wrong input is a 422 naming the field, never the handler's crash.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from runyard.errors import InvalidArgument
from runyard.serve.declare import REQUIRED, Image, Input, Scores, Table

#: Input types, as written in a schema, and what the demo page shows for each.
INPUT_TYPES = ("number", "integer", "text", "boolean", "numbers", "image", "table", "json")
#: Output types: as inputs, and class scores (a bar chart).
OUTPUT_TYPES = ("number", "integer", "text", "boolean", "numbers", "scores", "image", "table", "json")
#: Largest image accepted, in pixels (a decompression bomb is refused before it is decoded).
MAX_PIXELS = 40_000_000
#: Most rows of a table input.
MAX_ROWS = 100_000


class InputError(ValueError):
    """A request's input that does not match the signature: a 422 naming ``field``."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    spec: Input = field(default_factory=Input)

    @property
    def required(self) -> bool:
        return self.spec.default is REQUIRED


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Field, ...]
    output: str
    #: Inputs shown as one-click buttons on the demo page (the handler's ``examples``).
    examples: tuple[dict[str, Any], ...] = ()
    title: str = "model"
    description: str = ""


def _type_of(annotation: Any, where: str, output: bool) -> str:
    names = OUTPUT_TYPES if output else INPUT_TYPES
    if isinstance(annotation, str):
        if annotation in names:
            return annotation
        raise InvalidArgument(f"{where}: unknown type {annotation!r}; one of: {', '.join(names)}")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[X]: X (absence is the default's business)
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kept) == 1:
            return _type_of(kept[0], where, output)
    simple = {float: "number", int: "integer", str: "text", bool: "boolean", Image: "image", Table: "table",
              dict: "json", Scores: "scores"}
    if annotation in simple and (output or annotation is not Scores):
        return simple[annotation]
    if origin in (list, Sequence, tuple) and all(a in (float, int, Ellipsis) for a in typing.get_args(annotation)):
        return "numbers"
    if origin is dict or origin is Mapping:
        args = typing.get_args(annotation)
        if output and len(args) == 2 and args[1] in (float, int):
            return "scores"
        return "json"
    if annotation is list:
        return "numbers"
    shown = getattr(annotation, "__name__", repr(annotation))
    raise InvalidArgument(f"{where}: runyard cannot serve a value of type {shown}; annotate it as one of "
                          "float, int, str, bool, list[float], dict, runyard.serve.Image, runyard.serve.Table"
                          + (", runyard.serve.Scores" if output else ""))


def _from_schema(entry: Any, where: str) -> tuple[str, Input]:
    """A field written in a schema: ``"number"`` or ``{type = "image", width = 8, ...}``."""
    if isinstance(entry, str):
        return _type_of(entry, where, False), Input()
    if not isinstance(entry, Mapping) or "type" not in entry:
        raise InvalidArgument(f"{where}: expected a type name or a table with type = ..., got {entry!r}")
    known = set(Input.__dataclass_fields__) | {"type", "required"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise InvalidArgument(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in entry.items() if k not in ("type", "required")}
    if "default" not in values:
        values["default"] = REQUIRED
    return _type_of(str(entry["type"]), where, False), Input(**values)


def signature_of(handler: type, schema: Mapping[str, Any] | None = None) -> Signature:
    """The signature of a handler class: ``schema`` (``[serve]`` of runyard.toml) when it names
    inputs, else the class's ``inputs``/``output`` attributes, else ``predict``'s annotations."""
    name = handler.__name__
    predict = getattr(handler, "predict", None)
    if not callable(predict):
        raise InvalidArgument(f"handler {name} has no predict(self, ...) method")
    declared = dict(schema or {})
    attributes = getattr(handler, "inputs", None)
    if "inputs" not in declared and isinstance(attributes, Mapping):
        declared = {"inputs": attributes, "output": getattr(handler, "output", "json")}
    if "inputs" in declared:
        fields = [Field(key, *_from_schema(entry, f"input {key!r}")) for key, entry in dict(declared["inputs"]).items()]
        output = _type_of(str(declared.get("output", "json")), "output", True)
    else:
        fields, output = _annotated(predict, name)
    for f in fields:
        _check_spec(f)
    examples = getattr(handler, "examples", None) or declared.get("examples") or ()
    if not isinstance(examples, Sequence) or not all(isinstance(e, Mapping) for e in examples):
        raise InvalidArgument(f"handler {name}: examples must be a list of inputs (dicts of input name to value)")
    doc = inspect.getdoc(handler) or ""
    return Signature(tuple(fields), output, tuple(dict(e) for e in examples), title=name, description=doc)


def _annotated(predict: Any, name: str) -> tuple[list[Field], str]:
    try:
        hints = typing.get_type_hints(predict)
    except Exception as e:  # noqa: BLE001 - a name the annotations use is not importable: said as such
        raise InvalidArgument(f"handler {name}: cannot read predict's annotations ({type(e).__name__}: {e})") from None
    fields = []
    for parameter in list(inspect.signature(predict).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise InvalidArgument(f"handler {name}: predict(*args/**kwargs) declares no inputs; name each input")
        if parameter.name not in hints:
            raise InvalidArgument(f"handler {name}: predict's input {parameter.name!r} has no type annotation "
                                  "(e.g. x: float), and the class declares no inputs = {...}")
        default = parameter.default
        spec = default if isinstance(default, Input) else Input(
            default=REQUIRED if default is parameter.empty else default)
        fields.append(Field(parameter.name, _type_of(hints[parameter.name], f"input {parameter.name!r}", False), spec))
    if not fields:
        raise InvalidArgument(f"handler {name}: predict takes no inputs")
    returned = hints.get("return", dict)
    return fields, _type_of(returned, "predict's return", True)


def _check_spec(f: Field) -> None:
    spec = f.spec
    if spec.width is not None or spec.height is not None or spec.mode is not None:
        if f.type != "image":
            raise InvalidArgument(f"input {f.name!r}: width, height and mode are for images")
        if spec.mode not in (None, "L", "RGB"):
            raise InvalidArgument(f"input {f.name!r}: mode {spec.mode!r}: expected \"L\" (grey) or \"RGB\"")
        for size in (spec.width, spec.height):
            if size is not None and (not isinstance(size, int) or not 1 <= size <= 8192):
                raise InvalidArgument(f"input {f.name!r}: width and height are whole numbers of pixels, 1 to 8192")


# -- checking a request --------------------------------------------------------------------------


def decode(signature: Signature, body: Any) -> dict[str, Any]:
    """The handler's keyword arguments for one request's inputs (InputError names what is wrong)."""
    if not isinstance(body, Mapping):
        raise InputError("body", "expected a JSON object of inputs, e.g. {\""
                         + (signature.inputs[0].name if signature.inputs else "x") + "\": ...}")
    known = {f.name for f in signature.inputs}
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise InputError(str(unknown[0])[:80], f"no such input; this model takes: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for f in signature.inputs:
        if f.name not in body or body[f.name] is None:
            if f.required:
                raise InputError(f.name, f"required ({_describe(f)})")
            out[f.name] = f.spec.default
            continue
        out[f.name] = _value(f, body[f.name])
    return out


def _describe(f: Field) -> str:
    return {"number": "a number", "integer": "a whole number", "text": "a text", "boolean": "true or false",
            "numbers": "a list of numbers", "image": "an image: base64 PNG/JPEG, a data: URL, or rows of pixels",
            "table": "a table: {\"columns\": [...], \"rows\": [[...]]} or a list of objects",
            "json": "a JSON object"}[f.type]


def _number(f: Field, value: Any, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float)
                                                                         and not math.isfinite(value)):
        raise InputError(f.name, f"expected {_describe(f)}, got {_shown(value)}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise InputError(f.name, f"expected a whole number, got {value}")
        value = int(value)
    checked: float | int = value
    if f.spec.ge is not None and value < f.spec.ge:
        raise InputError(f.name, f"must be at least {f.spec.ge:g}, got {value}")
    if f.spec.le is not None and value > f.spec.le:
        raise InputError(f.name, f"must be at most {f.spec.le:g}, got {value}")
    return checked


def _value(f: Field, value: Any) -> Any:
    if f.type in ("number", "integer"):
        checked: Any = _number(f, value, f.type == "integer")
    elif f.type == "text":
        if not isinstance(value, str):
            raise InputError(f.name, f"expected a text, got {_shown(value)}")
        if f.spec.max_length is not None and len(value) > f.spec.max_length:
            raise InputError(f.name, f"at most {f.spec.max_length} characters, got {len(value)}")
        checked = value
    elif f.type == "boolean":
        if not isinstance(value, bool):
            raise InputError(f.name, f"expected true or false, got {_shown(value)}")
        checked = value
    elif f.type == "numbers":
        if not isinstance(value, list):
            raise InputError(f.name, f"expected a list of numbers, got {_shown(value)}")
        if f.spec.max_length is not None and len(value) > f.spec.max_length:
            raise InputError(f.name, f"at most {f.spec.max_length} numbers, got {len(value)}")
        checked = [_number(replace(f, name=f"{f.name}[{i}]", type="number"), v, False) for i, v in enumerate(value)]
    elif f.type == "image":
        from runyard.serve.values import image_input

        checked = image_input(f, value)
    elif f.type == "table":
        checked = _table(f, value)
    else:
        if not isinstance(value, dict | list):
            raise InputError(f.name, f"expected a JSON object or list, got {_shown(value)}")
        checked = value
    if f.spec.choices is not None and checked not in list(f.spec.choices):
        raise InputError(f.name, f"must be one of {', '.join(map(str, f.spec.choices))}, got {_shown(value)}")
    return checked


def _table(f: Field, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, Mapping) and isinstance(value.get("columns"), list) and isinstance(value.get("rows"), list):
        columns = [str(c) for c in value["columns"]]
        rows = value["rows"]
        if not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
            raise InputError(f.name, f"each row must be a list of {len(columns)} values (one per column)")
        table = [dict(zip(columns, r, strict=True)) for r in rows]
    elif isinstance(value, list) and all(isinstance(r, Mapping) for r in value):
        table = [dict(r) for r in value]
    else:
        raise InputError(f.name, f"expected {_describe(f)}, got {_shown(value)}")
    if len(table) > MAX_ROWS:
        raise InputError(f.name, f"at most {MAX_ROWS} rows, got {len(table)}")
    if f.spec.columns is not None:
        missing = [c for c in f.spec.columns if any(c not in row for row in table)]
        if missing:
            raise InputError(f.name, f"column {missing[0]!r} is missing; the columns are "
                             f"{', '.join(f.spec.columns)}")
    return table


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{type(value).__name__} {text[:30]}..."


# -- OpenAPI ---------------------------------------------------------------------------------------


def json_schema(f: Field) -> dict[str, Any]:
    spec = f.spec
    schemas: dict[str, dict[str, Any]] = {
        "number": {"type": "number"}, "integer": {"type": "integer"}, "text": {"type": "string"},
        "boolean": {"type": "boolean"},
        "numbers": {"type": "array", "items": {"type": "number"}},
        "image": {"oneOf": [{"type": "string", "format": "byte", "description": "base64 PNG or JPEG, or a data: URL"},
                            {"type": "array", "items": {"type": "array"}, "description": "rows of pixels"}]},
        "table": {"type": "object", "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                                                   "rows": {"type": "array", "items": {"type": "array"}}}},
        "json": {"type": "object"},
    }
    schema = schemas[f.type]
    extra: dict[str, Any] = {"x-runyard-type": f.type}
    for key, name in (("ge", "minimum"), ("le", "maximum")):
        if getattr(spec, key) is not None:
            (schema["items"] if f.type == "numbers" else extra)[name] = getattr(spec, key)
    if spec.max_length is not None:
        extra["maxLength" if f.type == "text" else "maxItems"] = spec.max_length
    if spec.choices is not None:
        extra["enum"] = list(spec.choices)
    if spec.description:
        extra["description"] = spec.description
    if not f.required:
        extra["default"] = spec.default
    for key in ("width", "height", "mode", "columns"):
        if getattr(spec, key) is not None:
            value = getattr(spec, key)
            extra[f"x-{key}"] = list(value) if key == "columns" else value
    return {**schema, **extra}


def output_schema(output: str) -> dict[str, Any]:
    inner: dict[str, dict[str, Any]] = {
             "number": {"type": "number"}, "integer": {"type": "integer"}, "text": {"type": "string"},
             "boolean": {"type": "boolean"}, "numbers": {"type": "array", "items": {"type": "number"}},
             "scores": {"type": "object", "additionalProperties": {"type": "number"}},
             "image": {"type": "string", "description": "a data: URL of a PNG"},
             "table": {"type": "object", "properties": {"columns": {"type": "array"}, "rows": {"type": "array"}}},
             "json": {}}
    return {**inner[output], "x-runyard-type": output}


def openapi(signature: Signature, version: str) -> dict[str, Any]:
    """The server's OpenAPI 3.1 document; the demo page is built from it alone."""
    inputs = {"type": "object", "required": [f.name for f in signature.inputs if f.required],
              "properties": {f.name: json_schema(f) for f in signature.inputs},
              "x-order": [f.name for f in signature.inputs], "additionalProperties": False}
    error = {"type": "object", "properties": {"error": {"type": "string"}, "field": {"type": "string"}}}
    prediction = {"type": "object", "properties": {"output": output_schema(signature.output),
                                                   "ms": {"type": "number"}}}

    def answer(text: str, ref: str) -> dict[str, Any]:
        schema = {"$ref": f"#/components/schemas/{ref}"}
        return {"description": text, "content": {"application/json": {"schema": schema}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": signature.title, "version": version, "description": signature.description},
        "x-runyard-examples": list(signature.examples),
        "paths": {
            "/predict": {"post": {
                "summary": "One prediction (a JSON object of inputs), or a batch (a JSON list of them)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/Inputs"},
                                                              {"type": "array",
                                                               "items": {"$ref": "#/components/schemas/Inputs"}}]}},
                    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/Inputs"}}}},
                "responses": {"200": answer("the prediction", "Prediction"),
                              "422": answer("an input does not match: field names it", "Error"),
                              "500": answer("the handler raised: error is its message", "Error"),
                              "503": answer("the model is still loading", "Error")}}},
            "/health": {"get": {"summary": "200 while the server is alive",
                                "responses": {"200": {"description": "alive"}}}},
            "/ready": {"get": {"summary": "200 once the model is loaded, 503 before",
                               "responses": {"200": {"description": "ready"}, "503": {"description": "loading"}}}},
        },
        "components": {"schemas": {"Inputs": inputs, "Prediction": prediction, "Error": error}},
    }
