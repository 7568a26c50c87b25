"""The dashboard's files: the single-page app built from ``web/`` into ``static/`` (by ``make ui``).

The shell and its assets carry no data, so they are public: a browser loads them first, and the app
then asks for a token when the server requires one (the data routes check it). Every page of the
app (``/projects/...``, ``/runs/...``, ``/compare``) answers with the same shell, so any URL the app
shows can be opened directly. Until the app is built, ``/`` explains how to build it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from runyard.errors import NotFound
from runyard.server.security import requires

STATIC = Path(__file__).resolve().parent / "static"
#: The app's own paths (see web/src/main.tsx); everything else under / is an API or a 404.
PAGES = ("/", "/projects/{rest:path}", "/runs/{rest:path}", "/compare")
NOT_BUILT = ("<!doctype html><html><head><meta charset='utf-8'><title>runyard</title></head><body>"
             "<h1>runyard server</h1><p>The dashboard is not built in this installation: run <code>make ui</code> "
             "(or <code>make install</code>) in a checkout. The API is under <code>/api/v1</code>; its "
             "description is at <a href='/api/openapi.json'>/api/openapi.json</a>.</p></body></html>")


def mount(app: FastAPI, static: Path = STATIC) -> None:
    def shell() -> Response:
        index = static / "index.html"
        if not index.is_file():
            return Response(NOT_BUILT, media_type="text/html")
        return Response(index.read_bytes(), media_type="text/html", headers={"cache-control": "no-cache"})

    for path in PAGES:
        app.add_api_route(path, requires("public")(shell), methods=["GET"], include_in_schema=False)

    @app.get("/assets/{name}", include_in_schema=False)
    @requires("public")
    def asset(name: str) -> Response:
        # One flat folder of hashed names: refuse anything else rather than resolve paths.
        if "/" in name or "\\" in name or name.startswith("."):
            raise NotFound(f"no asset {name!r}")
        file = static / "assets" / name
        if not file.is_file():
            raise NotFound(f"no asset {name!r}")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(file.read_bytes(), media_type=media,
                        headers={"cache-control": "public, max-age=31536000, immutable"})
