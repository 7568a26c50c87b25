"""What a run recorded over time: its metric series (list, envelope, points) and its log lines."""

from __future__ import annotations

from typing import Annotated, Any

import msgpack
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from runyard import wire
from runyard.server.security import requires
from runyard.server.state import Server


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    v1 = wire.API_PREFIX

    @app.get(f"{v1}/runs/{{ref}}/metrics", tags=["metrics"])
    @requires("reader")
    def metrics(request: Request, ref: str) -> list[dict[str, Any]]:
        """The run's metric series: point counts, step range and last value."""
        run = server.run_for(request, ref)
        return [wire.plain_out(s) for s in store.list_series(run.number)]

    @app.get(f"{v1}/runs/{{ref}}/metrics/{{key:path}}", tags=["metrics"])
    @requires("reader")
    def envelope(request: Request, ref: str, key: str, buckets: Annotated[int, Query(ge=1, le=100_000)] = 1000,
                 start: int | None = None, end: int | None = None) -> dict[str, Any]:
        """The exact envelope of a series: per bucket its step range, min, max, mean, last and counts."""
        run = server.run_for(request, ref)
        return {"key": key, **wire.envelope_out(store.envelope(run.number, key, buckets, start, end))}

    @app.get(f"{v1}/runs/{{ref}}/points/{{key:path}}", tags=["metrics"])
    @requires("reader")
    def points(request: Request, ref: str, key: str, start: int | None = None, end: int | None = None) -> Response:
        """Every point of a series in a step range: msgpack with little-endian int64/float64 arrays
        (``step``, ``time``, ``value``), or JSON lists when the client does not accept msgpack."""
        run = server.run_for(request, ref)
        pts = store.history(run.number, key, start, end)
        if wire.MSGPACK in request.headers.get("accept", ""):
            return Response(msgpack.packb(wire.points_out(pts)), media_type=wire.MSGPACK)
        return JSONResponse({"step": pts.steps.tolist(), "time": pts.times.tolist(),
                             "value": wire.plain(pts.values.tolist())})

    @app.get(f"{v1}/runs/{{ref}}/logs", tags=["logs"])
    @requires("reader")
    def logs(request: Request, ref: str, after: Annotated[int, Query(ge=0)] = 0,
             limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
             tail: Annotated[int | None, Query(ge=1, le=10_000)] = None) -> list[dict[str, Any]]:
        """Log lines after the line id ``after`` (or the last ``tail`` lines)."""
        run = server.run_for(request, ref)
        lines = store.tail_logs(run.number, tail) if tail is not None else store.read_logs(run.number, after, limit)
        return [wire.plain_out(line) for line in lines]
