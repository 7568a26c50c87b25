"""A handler's signature, read from its code or a schema, and the checks every request passes
before the handler sees it: what a caller of a model server gets for each kind of input."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from runyard.errors import InvalidArgument
from runyard.serve import Image, Input, Scores, Table
from runyard.serve.handler import make_handler, parse_ref
from runyard.serve.signature import InputError, decode, openapi, signature_of
from runyard.serve.values import OutputError, output_value


class Everything:
    """Takes one of each."""

    examples: ClassVar = [{"x": 1.5, "word": "b", "rows": {"columns": ["a", "b"], "rows": [[1, 2]]}}]

    def predict(self, x: float = Input(ge=0, le=10, description="a number"),
                n: int = 3, word: str = Input("a", choices=["a", "b"]),
                flag: bool = False, values: list[float] | None = None,
                picture: Image | None = Input(None, width=4, height=2, mode="RGB"),  # noqa: B008
                rows: Table = Input(columns=["a", "b"]), extra: dict | None = None) -> Scores:  # noqa: B008
        return {"yes": 0.9, "no": 0.1}


def test_a_signature_is_read_from_annotations_in_order_with_its_bounds_and_defaults() -> None:
    signature = signature_of(Everything)
    assert [(f.name, f.type, f.required) for f in signature.inputs] == [
        ("x", "number", True), ("n", "integer", False), ("word", "text", False), ("flag", "boolean", False),
        ("values", "numbers", False), ("picture", "image", False), ("rows", "table", True), ("extra", "json", False)]
    assert (signature.output, signature.title) == ("scores", "Everything")
    assert signature.description == "Takes one of each."
    schema = openapi(signature, "1")["components"]["schemas"]["Inputs"]
    assert schema["x-order"][:3] == ["x", "n", "word"] and schema["required"] == ["x", "rows"]
    assert schema["properties"]["x"]["minimum"] == 0 and schema["properties"]["x"]["maximum"] == 10
    assert schema["properties"]["word"]["enum"] == ["a", "b"] and schema["properties"]["n"]["default"] == 3
    assert schema["properties"]["picture"]["x-width"] == 4 and schema["properties"]["rows"]["x-columns"] == ["a", "b"]


def body(**overrides: Any) -> dict[str, Any]:
    return {"x": 2, "rows": [{"a": 1, "b": 2}], **overrides}


@pytest.mark.parametrize(("given", "field", "message"), [
    ({"x": 11}, "x", "at most 10"),
    ({"x": -1}, "x", "at least 0"),
    ({"x": "2"}, "x", "expected a number"),
    ({"x": True}, "x", "expected a number"),
    ({"x": float("nan")}, "x", "expected a number"),
    ({"n": 2.5}, "n", "whole number"),
    ({"word": "c"}, "word", "one of a, b"),
    ({"flag": 1}, "flag", "true or false"),
    ({"values": [1, "2"]}, "values[1]", "expected a number"),
    ({"values": 3}, "values", "a list of numbers"),
    ({"rows": {"columns": ["a", "b"], "rows": [[1]]}}, "rows", "2 values"),
    ({"rows": [{"a": 1}]}, "rows", "column 'b' is missing"),
    ({"rows": "a,b"}, "rows", "a table"),
    ({"extra": 5}, "extra", "JSON object"),
    ({"picture": "%%%"}, "picture", "not valid base64"),
    ({"picture": base64.b64encode(b"not an image").decode()}, "picture", "not an image"),
    ({"picture": [[1, 2], [3]]}, "picture", "same length"),
    ({"picture": [[300]]}, "picture", "0 to 255"),
    ({"surprise": 1}, "surprise", "no such input"),
])
def test_every_wrong_input_is_refused_naming_its_field(given: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        decode(signature_of(Everything), body(**given))
    assert caught.value.field == field and message in caught.value.message


def test_a_missing_required_input_is_named_and_optional_ones_take_their_defaults() -> None:
    with pytest.raises(InputError, match="rows: required"):
        decode(signature_of(Everything), {"x": 1})
    with pytest.raises(InputError, match="expected a JSON object of inputs"):
        decode(signature_of(Everything), [1, 2])
    got = decode(signature_of(Everything), body())
    assert got["n"] == 3 and got["word"] == "a" and got["flag"] is False and got["picture"] is None
    assert got["rows"] == [{"a": 1, "b": 2}]
    table = decode(signature_of(Everything), body(rows={"columns": ["a", "b"], "rows": [[1, 2], [3, 4]]}))["rows"]
    assert table == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert decode(signature_of(Everything), body(n=4.0))["n"] == 4  # 4.0 is a whole number


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image as Pillow

    out = io.BytesIO()
    Pillow.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_images_in_every_accepted_form_arrive_as_pixels_of_the_declared_size_and_mode() -> None:
    signature = signature_of(Everything)
    grey = np.full((8, 16), 200, dtype=np.uint8)
    for given in (png(grey), base64.b64encode(png(grey)).decode(),
                  "data:image/png;base64," + base64.b64encode(png(grey)).decode(), grey.tolist()):
        picture = decode(signature, body(picture=given))["picture"]
        assert picture.shape == (2, 4, 3) and picture.dtype == np.uint8 and (picture == 200).all()
    # A clear pixel is white, as a browser shows it: a drawing on a clear canvas keeps its meaning.
    rgba = np.zeros((2, 4, 4), dtype=np.uint8)
    assert (decode(signature, body(picture=png(rgba)))["picture"] == 255).all()


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    from PIL import Image as Pillow

    out = io.BytesIO()
    Pillow.new("L", (10_000, 5_000)).save(out, "PNG")  # 50 M pixels in a few KiB
    with pytest.raises(InputError, match="at most 40000000 pixels"):
        decode(signature_of(Everything), body(picture=out.getvalue()))


def test_outputs_are_made_json_as_declared_or_refused() -> None:
    assert output_value("scores", np.array([[0.2, 0.8]])) == {"0": 0.2, "1": 0.8}
    assert output_value("scores", {np.int64(3): np.float32(0.5)}) == {"3": 0.5}
    assert output_value("number", np.float64(2.5)) == 2.5 and output_value("number", [7]) == 7
    assert output_value("number", float("inf")) is None
    assert output_value("table", [{"a": 1}, {"b": 2}]) == {"columns": ["a", "b"], "rows": [[1, None], [None, 2]]}
    assert output_value("image", np.zeros((2, 2), dtype=np.uint8)).startswith("data:image/png;base64,")
    assert output_value("text", 12) == "12"
    with pytest.raises(OutputError, match="declared a number"):
        output_value("number", "twelve")
    with pytest.raises(OutputError, match="scores"):
        output_value("scores", "high")


def test_a_handler_without_annotations_declares_a_schema_in_the_class_or_runyard_toml(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text(
        "class Plain:\n"
        "    inputs = {'age': {'type': 'number', 'ge': 0}, 'name': 'text'}\n"
        "    output = 'json'\n"
        "    def predict(self, age, name):\n"
        "        return {'age': age, 'name': name}\n"
        "class Bare:\n"
        "    def predict(self, rows):\n"
        "        return len(rows)\n")
    plain = make_handler(tmp_path, "plain.py:Plain")
    assert [(f.name, f.type, f.required) for f in plain.signature.inputs] == [("age", "number", True),
                                                                              ("name", "text", True)]
    with pytest.raises(InputError, match="at least 0"):
        decode(plain.signature, {"age": -1, "name": "x"})
    with pytest.raises(InvalidArgument, match="has no type annotation"):
        make_handler(tmp_path, "plain.py:Bare")
    (tmp_path / "runyard.toml").write_text(
        '[serve]\nhandler = "plain.py:Bare"\noutput = "integer"\n'
        '[serve.inputs.rows]\ntype = "table"\ncolumns = ["a"]\n')
    bare = make_handler(tmp_path, "plain.py:Bare")
    assert bare.signature.inputs[0].type == "table" and bare.signature.output == "integer"
    assert bare.predict(decode(bare.signature, {"rows": [{"a": 1}, {"a": 2}]})) == 2


@pytest.mark.parametrize(("source", "message"), [
    ("def predict(self, x: set) -> float: ...", "cannot serve a value of type set"),
    ("def predict(self, *args) -> float: ...", "declares no inputs"),
    ("def predict(self) -> float: ...", "takes no inputs"),
    ("def predict(self, x: float = Input(width=3)) -> float: ...", "width, height and mode are for images"),
    ("def predict(self, x: Image = Input(mode='CMYK')) -> float: ...", "mode 'CMYK'"),
    ("def predict(self, x: Scores) -> float: ...", "cannot serve a value of type Scores"),
    ("examples = 'nope'\n    def predict(self, x: float) -> float: ...", "examples must be a list"),
])
def test_a_handler_runyard_cannot_serve_is_refused_with_the_reason(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "h.py").write_text(f"from runyard.serve import *\nclass H:\n    {source}\n")
    with pytest.raises(InvalidArgument, match=message):
        make_handler(tmp_path, "h.py:H")


def test_handler_references_are_files_inside_the_served_code(tmp_path: Path) -> None:
    assert str(parse_ref("models/serve.py:Model")) == "models/serve.py:Model"
    for wrong in ("serve.py", "serve:Model", "/etc/x.py:Model", "../x.py:Model", "serve.py:1Model"):
        with pytest.raises(InvalidArgument):
            parse_ref(wrong)
    with pytest.raises(InvalidArgument, match=r"no file missing\.py"):
        make_handler(tmp_path, "missing.py:Model")
