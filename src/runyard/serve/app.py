"""The model server: one ASGI app for ``runyard serve`` on this machine and in Ray Serve replicas.

``POST /predict`` (JSON, or multipart with files for images), ``GET /health`` (alive),
``GET /ready`` (503 until ``load()`` returned), ``GET /openapi.json``, and ``/`` the demo page
built from it (``static/``). Paths are relative, so the same app answers under the runyard
server's ``/serve/NAME/``. A handler that raises is a 500 with its message; the server lives on.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from runyard.serve.signature import InputError, decode, openapi
from runyard.serve.stats import Stats

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from runyard.serve.handler import Handler

#: Largest request body (bytes); ``--max-body``.
MAX_BODY = 32 << 20
#: Most inputs in one batch request.
MAX_BATCH = 1024
#: The demo page may run its own script and talk to this server only.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
STATIC = {"": ("demo.html", "text/html; charset=utf-8"), "demo.js": ("demo.js", "text/javascript; charset=utf-8"),
          "demo.css": ("demo.css", "text/css; charset=utf-8")}


class ModelServer:
    """State shared by the routes: the handler, whether it loaded, the request counts."""

    def __init__(self, handler: Handler, model_dir: str, *, version: str = "1", log_inputs: bool = False,
                 max_body: int = MAX_BODY, say: Callable[[str], None] | None = None) -> None:
        self.handler = handler
        self.model_dir = model_dir
        self.version = version
        self.log_inputs = log_inputs
        self.max_body = max_body
        self.stats = Stats()
        self.ready = threading.Event()
        self.failed: str | None = None
        self.say = say or _say
        self._schema: dict[str, Any] | None = None
        self._limiter: Any = None

    def load(self) -> bool:
        """Run the handler's ``load``; False (and the reason in ``failed``) when it raised."""
        started = time.monotonic()
        try:
            self.handler.load(self.model_dir)
            _warm(self.handler)
        except BaseException as e:  # noqa: BLE001 - the user's code: any failure is the run's to report
            self.failed = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            return False
        self.ready.set()
        self.say(f"model loaded in {time.monotonic() - started:.2f} s: ready")
        return True

    @property
    def schema(self) -> dict[str, Any]:
        if self._schema is None:
            self._schema = openapi(self.handler.signature, self.version)
        return self._schema

    @property
    def limiter(self) -> Any:
        if self._limiter is None:
            import anyio

            self._limiter = anyio.CapacityLimiter(self.handler.concurrency)
        return self._limiter


def _warm(handler: Handler) -> None:
    """Import what decoding requests needs before the server says it is ready: the first request
    would otherwise pay for numpy and Pillow."""
    import runyard.serve.values  # noqa: F401

    if any(f.type == "image" for f in handler.signature.inputs) or handler.signature.output == "image":
        import PIL.Image
        import PIL.PngImagePlugin  # noqa: F401


def _say(line: str) -> None:
    print(line, flush=True)


def build_app(server: ModelServer) -> Starlette:
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        status, body, shown = await _predict(server, request)
        elapsed = time.perf_counter() - started
        if "output" in body or "outputs" in body:
            body["ms"] = round(elapsed * 1000, 3)
        try:
            response = _json(body, status, {"retry-after": "2"} if status == 503 else None)
        except (TypeError, ValueError) as e:  # an output JSON cannot hold (an int past 64 bits, a set)
            status = 500
            response = _json({"error": f"predict's output cannot be sent as JSON: {e}", "type": "OutputError"}, 500)
        server.stats.record(elapsed, status)
        server.say(f"POST /predict {status} {elapsed * 1000:.1f} ms" + (f" {shown}" if shown else ""))
        return response

    async def health(_: Request) -> Response:
        return _json({"status": "alive"}, 200)

    async def ready(_: Request) -> Response:
        if server.ready.is_set():
            return _json({"status": "ready"}, 200)
        if server.failed is not None:
            return _json({"status": "failed", "error": server.failed}, 503)
        return _json({"status": "loading"}, 503, {"retry-after": "2"})

    async def schema(_: Request) -> Response:
        return _json(server.schema, 200)

    async def static(request: Request) -> Response:
        from starlette.responses import PlainTextResponse, Response

        name = request.path_params.get("name", "")
        found = STATIC.get(name)
        if found is None:
            return PlainTextResponse("not found: this model server answers /, /predict, /health, /ready and "
                                     "/openapi.json", 404)
        content = resources.files("runyard.serve").joinpath("static", found[0]).read_bytes()
        return Response(content, 200, media_type=found[1].split(";")[0], headers={
            "content-type": found[1], "content-security-policy": PAGE_POLICY, "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer", "cache-control": "no-cache"})

    return Starlette(routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/openapi.json", schema, methods=["GET"]),
        Route("/", static, methods=["GET", "HEAD"]),
        Route("/{name}", static, methods=["GET", "HEAD"]),
    ])


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    import orjson
    from starlette.responses import Response

    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS), status,
                    media_type="application/json", headers={"cache-control": "no-store", **(headers or {})})


async def _predict(server: ModelServer, request: Request) -> tuple[int, dict[str, Any], str]:
    """(status, body, what the request line shows of the inputs)."""
    import anyio

    if not server.ready.is_set():
        return 503, {"error": "the model is still loading" if server.failed is None else
                     f"the model failed to load: {server.failed}"}, ""
    try:
        payload = await _payload(server, request)
    except InputError as e:
        return (413 if e.field == "body" and "larger" in e.message else 422), {"error": str(e), "field": e.field}, ""
    shown = _shown(payload) if server.log_inputs else ""
    signature = server.handler.signature
    from runyard.serve.values import output_value

    try:
        # Checking the inputs and predicting, in one trip to a worker thread: off the event loop (a
        # body of millions of numbers takes a while to check, and /health must not wait for it),
        # and one hop per request, not two.
        batch, output = await anyio.to_thread.run_sync(_decode_and_predict, server.handler, payload,
                                                       limiter=server.limiter)
    except InputError as e:
        return 422, {"error": str(e), "field": e.field}, shown
    except Exception as e:  # noqa: BLE001 - the handler's failure is the request's, never the server's
        print(f"predict raised {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 500, {"error": f"{type(e).__name__}: {e}", "type": type(e).__name__}, shown
    try:
        if batch:
            return 200, {"outputs": [output_value(signature.output, o) for o in output]}, shown
        return 200, {"output": output_value(signature.output, output)}, shown
    except Exception as e:  # noqa: BLE001 - an output that does not match its declared type
        print(f"predict's output: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 500, {"error": f"{type(e).__name__}: {e}", "type": type(e).__name__}, shown


def _decode_and_predict(handler: Handler, payload: Any) -> tuple[bool, Any]:
    """(whether it was a batch, the handler's output): InputError before the handler is called."""
    decoded = _decode_request(handler.signature, payload)
    if isinstance(decoded, list):
        return True, handler.predict_batch(decoded)
    return False, handler.predict(decoded)


def _decode_request(signature: Any, payload: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """The handler's arguments for one request (a dict), or a batch's (a list); the images of the
    whole request share one pixel budget (``values.pixel_budget``)."""
    from runyard.serve.values import pixel_budget

    with pixel_budget():
        if not isinstance(payload, list):
            return decode(signature, payload)
        if not 1 <= len(payload) <= MAX_BATCH:
            raise InputError("body", f"a batch holds 1 to {MAX_BATCH} inputs, got {len(payload)}")
        batch = []
        for i, one in enumerate(payload):
            try:
                batch.append(decode(signature, one))
            except InputError as e:
                raise InputError(f"[{i}].{e.field}", e.message) from None
        return batch


async def _payload(server: ModelServer, request: Request) -> Any:
    import orjson

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > server.max_body:
        raise InputError("body", f"larger than {server.max_body >> 20} MiB")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # curl -d sends JSON as application/x-www-form-urlencoded unless told otherwise: taken as JSON.
    if kind not in ("application/json", "", "application/x-www-form-urlencoded", "text/plain",
                    "multipart/form-data"):
        raise InputError("body", f"send JSON (application/json) or a form (multipart/form-data), not {kind}")
    raw = bytearray()  # read whole, held to the limit: a body without a Content-Length is no exception
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > server.max_body:
            raise InputError("body", f"larger than {server.max_body >> 20} MiB")
    if kind == "multipart/form-data":
        request._body = bytes(raw)  # what request.form() parses, instead of the stream read above
        return await _form(server, request)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InputError("body", f"not valid JSON ({e})") from None


async def _form(server: ModelServer, request: Request) -> dict[str, Any]:
    """A multipart form as inputs: files as their bytes (images), fields parsed as JSON when they
    are (numbers, lists), else kept as text."""
    import orjson
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    types = {f.name: f.type for f in server.handler.signature.inputs}
    out: dict[str, Any] = {}
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=16, max_fields=256, max_part_size=server.max_body)
    except MultiPartException as e:
        raise InputError("body", f"not a form this server can read: {e.message}") from None
    except HTTPException as e:  # Starlette's own words for the same, inside an app
        raise InputError("body", f"not a form this server can read: {e.detail}") from None
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                out[key] = await value.read()
            elif types.get(key) == "text":
                out[key] = value
            else:
                try:
                    out[key] = orjson.loads(value)
                except orjson.JSONDecodeError:
                    out[key] = value
    finally:
        await form.close()
    return out


def _shown(payload: Any) -> str:
    import orjson

    try:
        text = orjson.dumps(payload, default=lambda b: f"<{len(b)} bytes>").decode()
    except TypeError:
        text = repr(payload)
    return text if len(text) <= 300 else text[:300] + "..."
