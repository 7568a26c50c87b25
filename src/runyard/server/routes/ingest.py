"""The shippers' routes: ``POST /ingest`` (spool records, msgpack, applied once, acknowledged by
cursor) and the cursor a shipper resumes from. Decoding and checks are in ``server/ingest.py``."""

from __future__ import annotations

import tempfile
from typing import Annotated, Any

import anyio
import msgpack
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from runyard import wire
from runyard.errors import TooLarge
from runyard.server import ingest
from runyard.server.bodies import BodyFile
from runyard.server.security import requires
from runyard.server.state import Server, principal_of


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/ingest/cursor", tags=["ingest"])
    @requires("writer")
    def cursor(request: Request, run: Annotated[str, Query(max_length=64, pattern=r"^[0-9A-Za-z]{10,64}$")],
               writer: Annotated[str, Query(max_length=64, pattern=r"^[0-9A-Za-z_-]{1,64}$")]) -> dict[str, Any]:
        """The highest sequence number of this writer's records the server holds (-1: none)."""
        cursor, _, project = store.ingest_state(run, writer)
        scope = principal_of(request).project
        return {"cursor": -1 if scope is not None and project not in (None, scope) else cursor}

    async def ingest_route(request: Request) -> Response:
        """Spool records from a shipper (msgpack, deflate): applied once, acknowledged by cursor."""
        deflated = request.headers.get("content-encoding", "") == wire.ENCODING_DEFLATE
        scope = principal_of(request).project
        # The body waits on disk past its first MiB, so clients sending at once hold no memory; only
        # the few holding a decode slot have theirs in memory, inflated and decoded within bounds.
        with await _spooled_body(request, ingest.MAX_BODY) as spooled:

            def decode_and_apply() -> ingest.Applied:  # off the event loop: streams keep flowing meanwhile
                spooled.seek(0)
                run_id, writer, items = ingest.decode(spooled.read(), deflated)
                return ingest.apply(store, server.artifacts, run_id, writer, items, scope, server.watcher)

            async with server.decoding.slot():
                applied = await anyio.to_thread.run_sync(decode_and_apply)
        server.hub.publish(applied.run_number, applied.project)
        return Response(msgpack.packb({"run_number": applied.run_number, "cursor": applied.cursor}),
                        media_type=wire.MSGPACK)

    # The hot path skips FastAPI's body parsing: a plain route, described in the OpenAPI spec by hand.
    # What a shipper does with each answer: retry a 503; set aside a batch refused with a 4xx, which
    # sending again cannot change (see server/ingest.py).
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"description": "The records are malformed"},
        413: {"description": "The body, or what it decodes to, is more than one request may carry: send the "
                             "records in smaller batches"},
        422: {"description": "The records are well formed, but the database cannot store them"},
        503: {"description": "The database or the server is busy: send the batch again after Retry-After "
                             "seconds"},
    }
    app.add_api_route(f"{v1}/ingest", requires("writer")(ingest_route), methods=["POST"], tags=["ingest"],
                      responses=refusals,
                      openapi_extra={"requestBody": {"required": True, "content": {wire.MSGPACK: {"schema": {
                          "type": "string", "format": "binary"}}}}})


async def _spooled_body(request: Request, limit: int) -> Any:
    """The request's body in a temporary file (in memory up to 1 MiB, then on disk); 413 past ``limit``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body is larger than {limit >> 20} MiB; send smaller batches")
    in_memory = 1 << 20
    spooled = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115 - returned to the caller's `with`
    body = BodyFile(spooled, in_memory)  # past its first MiB, on disk: written off the event loop
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the body is larger than {limit >> 20} MiB; send smaller batches")
            await body.write(chunk)
        await body.flush()
    except BaseException:
        spooled.close()
        raise
    return spooled
