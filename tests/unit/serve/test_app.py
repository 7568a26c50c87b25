"""The model server's app against what a caller may send (found by a review that attacked it):
big images in a batch, formats Pillow should not open, forms without a length and outputs JSON
cannot hold. In process, over httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import httpx

from runyard.serve.app import ModelServer, build_app
from runyard.serve.handler import make_handler

HANDLER = '''
from runyard.serve import Image, Input


class Pictures:
    def predict(self, picture: Image = Input(width=2, height=2), count: list[float] | None = None) -> int:
        return int(picture.sum())


class Odd:
    def predict(self, x: float) -> dict:
        return {"big": 2 ** 70} if x > 0 else {"set": {1, 2}}
'''


def server_for(tmp_path: Path, cls: str, max_body: int = 32 << 20) -> ModelServer:
    (tmp_path / "h.py").write_text(HANDLER)
    model = ModelServer(make_handler(tmp_path, f"h.py:{cls}"), str(tmp_path), max_body=max_body, say=lambda _: None)
    assert model.load()
    return model


def post(model: ModelServer, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(model))
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            return await client.post("/predict", **kwargs)

    return asyncio.run(go())


def blank_png(width: int, height: int) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_the_images_of_a_batch_share_one_pixel_budget(tmp_path: Path) -> None:
    model = server_for(tmp_path, "Pictures")
    small = blank_png(5000, 5000)  # 25 M pixels in a few KiB: one is fine, two are not
    assert post(model, json={"picture": small}).status_code == 200
    refused = post(model, json=[{"picture": small}, {"picture": small}])
    assert refused.status_code == 422 and "at most 40000000 pixels in all" in refused.json()["error"]
    assert refused.json()["field"] == "[1].picture"


def test_only_the_common_image_formats_are_opened(tmp_path: Path) -> None:
    from PIL import Image

    model = server_for(tmp_path, "Pictures")
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "TGA")  # Pillow reads TGA; a model server does not
    refused = post(model, json={"picture": base64.b64encode(out.getvalue()).decode()})
    assert refused.status_code == 422 and "PNG, JPEG, GIF, BMP or WebP" in refused.json()["error"]
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nshowpage\n"  # would run Ghostscript
    assert post(model, json={"picture": base64.b64encode(eps).decode()}).status_code == 422


def test_a_form_without_a_length_is_held_to_the_body_limit(tmp_path: Path) -> None:
    model = server_for(tmp_path, "Pictures", max_body=64 << 10)

    def chunks() -> Any:
        yield b"--b\r\nContent-Disposition: form-data; name=\"picture\"; filename=\"p.png\"\r\n\r\n"
        for _ in range(200):
            yield b"\0" * 1024  # 200 KiB, no Content-Length: sent chunked
        yield b"\r\n--b--\r\n"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=build_app(model))
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            async def body() -> Any:
                for chunk in chunks():
                    yield chunk

            return await client.post("/predict", content=body(),
                                     headers={"content-type": "multipart/form-data; boundary=b"})

    answer = asyncio.run(go())
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]
    broken = post(model, content=b"--b\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=b"})
    assert broken.status_code == 422 and broken.json()["field"] == "body"  # JSON, as every answer of it


def test_an_output_json_cannot_hold_is_a_500_counted_as_an_error(tmp_path: Path) -> None:
    model = server_for(tmp_path, "Odd")
    for x in (1, -1):
        answer = post(model, json={"x": x})
        assert answer.status_code == 500 and "cannot be sent as JSON" in answer.json()["error"]
    assert model.stats.flush()["serve/errors"] == 2
