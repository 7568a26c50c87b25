"""A run's notebook output (``.ipynb``) rendered as a page that runs nothing (notebook_html.py).

Read as its download is (the reader role, the run resolved among those the token may see), then
converted on a worker thread, a few at once, and kept by content hash: a big notebook neither
stalls the event loop nor is converted again for the next reader.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response

from runyard import wire
from runyard.errors import InvalidArgument, NotFound, TooLarge
from runyard.server import notebook_html
from runyard.server.capacity import Capacity
from runyard.server.routes.artifacts import _artifact_path
from runyard.server.security import requires
from runyard.server.state import Server, error_response

#: Conversions at once: each holds a notebook (up to MAX_NOTEBOOK) and its page in memory.
CONVERSIONS = 2
#: Seconds a request waits for a conversion slot before it is answered 503.
CONVERSION_WAIT = 30.0
NO_EXTRA = ("showing notebooks needs the server's notebook extra: pip install 'runyard[notebook]' "
            "(the notebook can still be downloaded)")


def add_routes(app: FastAPI, server: Server) -> None:
    store = server.store
    conversions = Capacity("notebook conversions", CONVERSIONS, CONVERSION_WAIT)
    cache = notebook_html.RenderCache()

    def notebook_entry(request: Request, ref: str, path: str) -> tuple[str, str, str]:
        """(path, content ref, sha256) of the run's notebook ``path``, once the caller may read it."""
        run = server.run_for(request, ref)
        path = _artifact_path(path)
        if not path.lower().endswith(".ipynb"):
            raise InvalidArgument(f"{path!r} is not a notebook: only .ipynb artifacts are shown as pages")
        entry = next((a for a in store.list_artifacts(run.number, path) if a.path == path), None)
        if entry is None:
            raise NotFound(f"run {run.number} has no artifact {path!r}")
        if entry.size > notebook_html.MAX_NOTEBOOK:
            raise TooLarge(f"{path} has {entry.size >> 20} MiB; notebooks past {notebook_html.MAX_NOTEBOOK >> 20} "
                           "MiB are not shown here: download it instead")
        return path, entry.content_ref, entry.sha256

    def convert(content_ref: str, key: str, title: str) -> str:
        with server.artifacts.open(content_ref) as f:
            data = f.read(notebook_html.MAX_NOTEBOOK + 1)
        if len(data) > notebook_html.MAX_NOTEBOOK:  # the record's size was wrong: the bytes decide
            raise TooLarge(f"{title} is larger than {notebook_html.MAX_NOTEBOOK >> 20} MiB: download it instead")
        page = notebook_html.render(data, title)
        cache.put(key, page)
        return page

    @app.get(f"{wire.API_PREFIX}/runs/{{ref}}/rendered/{{path:path}}", tags=["artifacts"],
             responses={200: {"content": {"text/html": {}}}})
    @requires("reader")
    async def rendered(request: Request, ref: str, path: str) -> Response:
        """A notebook artifact (``.ipynb``) as an HTML page: markdown, code, text, images and
        sanitised HTML; no script of the notebook runs (none is kept, and the page's
        Content-Security-Policy allows none, in a sandbox). Past 50 MiB: 413, download it instead."""
        path, content_ref, sha256 = await anyio.to_thread.run_sync(notebook_entry, request, ref, path)
        title = path.rsplit("/", 1)[-1]
        # Kept by content and name: the page's title is the file's name, which another run (another
        # project's, maybe) holding the same notebook need not share.
        key = f"{sha256}/{title}"
        tag = notebook_html.etag(key)
        headers = {"content-security-policy": notebook_html.PAGE_CSP, "x-content-type-options": "nosniff",
                   "cache-control": "private, no-cache", "etag": tag}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        page = cache.get(key)
        if page is None:
            try:
                async with conversions.slot():
                    page = await anyio.to_thread.run_sync(convert, content_ref, key, title)
            except ImportError:
                return error_response(501, NO_EXTRA)
        return Response(page, media_type="text/html; charset=utf-8", headers=headers)
