"""A typed client of the runyard server (httpx), and the store and artifact views built on it.

``RemoteStore`` answers the same calls as the local store for everything the CLI and the read API
use, with the same values (see wire.py), so ``RUNYARD_SERVER`` changes where data comes from and
nothing else. Failures raise runyard's errors: ``ServerError`` when the server cannot be reached,
``AccessDenied`` for 401/403, ``NotFound``, ``Conflict``, ``InvalidArgument`` as the server says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from runyard import credential, wire
from runyard._version import __version__
from runyard.credential import Credential
from runyard.errors import AccessDenied, Busy, Conflict, InvalidArgument, NotFound, ServerError, TooLarge, Unstorable
from runyard.types import RunKind, RunStatus

if TYPE_CHECKING:
    import httpx

    from runyard.store.api import (
        AlertEvent,
        AlertRule,
        ArtifactEntry,
        LogLine,
        Model,
        ModelVersion,
        Page,
        Project,
        Run,
        RunInput,
        RunPatch,
        RunQuery,
        SeriesInfo,
    )
    from runyard.store.series import Envelope, Points

_BY_STATUS: dict[int, type[Exception]] = {400: InvalidArgument, 401: AccessDenied, 403: AccessDenied,
                                          404: NotFound, 409: Conflict, 413: TooLarge, 415: InvalidArgument,
                                          416: InvalidArgument,
                                          # the database refuses these records for what they are: a
                                          # shipper sets them aside instead of retrying forever
                                          422: Unstorable}


def _ref(ref: str | int) -> str:
    return quote(str(ref), safe="")


#: Largest uncompressed ingest body sent (the server takes up to 64 MiB).
MAX_INGEST_BYTES = 32 << 20
#: Blob names asked about per request (about 700 KB of JSON).
MISSING_BATCH = 10_000
#: Content of this many bytes or more is uploaded in pieces of PIECE_BYTES that resume (server/resumable.py).
RESUMABLE_FROM = 64 << 20
PIECE_BYTES = 16 << 20
#: Pauses a resumable upload waits out (refused pieces, content being stored) before it gives up.
UPLOAD_WAITS = 66
#: Calls that are safe to repeat: reads, content-addressed uploads, and ingest (idempotent by sequence).
_IDEMPOTENT = ("GET", "PUT")
#: Gateway answers that mean "try again" rather than "you asked wrongly".
_TRANSIENT_STATUS = (502, 503, 504)
#: "Too many requests from this token": refused before anything was done, so any call may be
#: sent again, once the ``Retry-After`` it carries has passed.
_RATE_LIMITED = 429
#: Longest wait a server's ``Retry-After`` is followed for within one call (the shipper then backs off
#: on its own, at least as long as the server said).
MAX_RETRY_AFTER = 60.0


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_of(url: str, status: int, body: bytes, reason: str, wait: float | None = None) -> Exception:
    """The error a server's answer ``status`` (with its JSON ``{"error": ...}`` body) stands for."""
    import json

    try:
        message = str(json.loads(body).get("error"))
    except Exception:  # noqa: BLE001 - a proxy's HTML page, say
        message = body[:200].decode("utf-8", "replace") or reason
    if status == 401 and "RUNYARD_TOKEN" not in message:  # the server's words may already say it
        message += " (set RUNYARD_TOKEN to a token from `runyard token create`)"
    if status in (503, _RATE_LIMITED):
        return Busy(f"server {url}: {message}", wait if wait is not None else 0.0)
    cls = _BY_STATUS.get(status, ServerError)
    return cls(f"server {url}: {message}" if cls is ServerError else message)


def quick_get(url: str, token: str | Credential | None, path: str, params: Mapping[str, Any],
              timeout: float = 10.0) -> Any:
    """One GET with the standard library, for commands that must answer at once (``runyard status``
    in a shell prompt): importing httpx and building its TLS context costs about 130 ms."""
    import http.client
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"the runyard server must be an http:// or https:// URL, not {url!r}")
    headers = {"user-agent": f"runyard/{__version__}", "accept": "application/json"}

    def get(target: str, query: Mapping[str, Any]) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{url}{target}?{urllib.parse.urlencode(query)}",  # noqa: S310 - checked
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    given = Credential(token, "the token given") if isinstance(token, str) else token
    try:
        if given is not None:
            if prove(url, given, get):
                headers["authorization"] = f"Bearer {given.token}"
            elif not given.local:
                raise _bound_error(url, given)
        request = urllib.request.Request(f"{url}{wire.API_PREFIX}{path}?{urllib.parse.urlencode(params)}",  # noqa: S310
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise _error_of(url, e.code, e.read(), str(e.reason), retry_after(e.headers.get("retry-after"))) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise ServerError(f"cannot reach the runyard server at {url}: {reason}") from None
    except ValueError as e:  # a 200 that is not JSON: a proxy's page, say
        raise ServerError(f"server {url}: the answer is not runyard's JSON ({e})") from None


def _bound_error(url: str, given: Credential) -> AccessDenied:
    return AccessDenied(
        f"not sending the token {given.shown} (from {given.source}) to {url}: that server does not prove it "
        "holds it, so the token is unknown or revoked there, or was made for another server (a runyard.toml or "
        "RUNYARD_SERVER pointing elsewhere?). A token goes only to the server it was created on: use one from "
        f"`runyard token create` run against {url}")


def prove(url: str, given: Credential, get: Any) -> bool:
    """Whether the server at ``url`` proves it holds ``given`` (``get(path, params)`` returns status
    and body of one GET sent without a token)."""
    import json

    prefix = credential.prefix_of(given.token)
    if prefix is None:
        return False
    nonce = credential.new_nonce()
    status, body = get(credential.PROOF_PATH, {"prefix": prefix, "nonce": nonce})
    if status != 200:
        return False
    try:
        answer = json.loads(body).get("proof")
    except (ValueError, AttributeError):
        return False
    import hmac

    return isinstance(answer, str) and hmac.compare_digest(answer, credential.expected_proof(given.token, nonce, url))


class Client:
    """One server, one token; connections are kept and reused.

    The token is sent only once the server proved it holds it (``runyard.credential``): a token is
    bound to the server it was created on. A configured token the server cannot prove raises
    ``AccessDenied``; the home's local credential is then just not sent.

    A call that is safe to repeat is retried ``retries`` times with growing, jittered pauses when the
    connection fails or a gateway says the server is unavailable, waiting at least what the server's
    ``Retry-After`` asks (up to MAX_RETRY_AFTER); other calls fail at once. Any call refused for
    its token's request rate (429) is retried the same way: the server did nothing with it. When
    the retries run out on a 503 or a 429, ``Busy`` says how long the server asked to wait
    (``retry_after``).
    """

    def __init__(self, url: str, token: str | Credential | None = None, timeout: float = 30.0,
                 retries: int = 4) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.retries = retries
        self.credential = Credential(token, "the token given") if isinstance(token, str) else token
        self._proven = self.credential is None
        self.http = httpx.Client(base_url=self.url, headers={"user-agent": f"runyard/{__version__}"},
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))

    def _authorize(self) -> None:
        """Ask the server for its proof once, then send the token on every request (or not at all)."""
        given = self.credential
        if self._proven or given is None:
            return

        def get(path: str, params: dict[str, str]) -> tuple[int, bytes]:
            response = self.http.get(path, params=params)
            if response.status_code in _TRANSIENT_STATUS:  # unavailable: no answer yet, not a wrong one
                raise self._error(response)
            return response.status_code, response.content

        if prove(self.url, given, get):
            self.http.headers["authorization"] = f"Bearer {given.token}"
        elif not given.local:
            raise _bound_error(self.url, given)
        self._proven = True

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import random
        import time

        import httpx

        if method in ("POST", "PUT", "PATCH", "DELETE") and "json" not in kwargs and "content" not in kwargs:
            kwargs["json"] = {}  # the server takes only JSON or msgpack bodies on changes
        url = wire.API_PREFIX + path if path.startswith("/") else path
        repeatable = method in _IDEMPOTENT or path == "/ingest"
        asked = 0.0  # what the last answer's Retry-After asked for
        content = kwargs.get("content")
        # A file body is sent from where it stood, again on each try (not from its start: an upload
        # of what is left to read of a file).
        origin = content.tell() if content is not None and hasattr(content, "tell") else None
        for attempt in range(1 + self.retries):
            if attempt:
                jitter = random.uniform(0, 0.25 * 2 ** attempt)  # noqa: S311 - jitter, not secrecy
                time.sleep(max(jitter, min(asked, MAX_RETRY_AFTER)))
            if origin is not None:
                content.seek(origin)  # type: ignore[union-attr]
            try:
                self._authorize()
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as e:
                error: Exception = ServerError(f"cannot reach the runyard server at {self.url}: "
                                               f"{e or type(e).__name__}")
                if not repeatable:
                    break
                continue
            status = response.status_code
            if status == _RATE_LIMITED or (repeatable and status in _TRANSIENT_STATUS):
                asked = retry_after(response.headers.get("retry-after")) or 0.0
                error = self._error(response)
                continue
            if response.status_code >= 400:
                raise self._error(response)
            return response
        raise error

    def _error(self, response: httpx.Response) -> Exception:
        return _error_of(self.url, response.status_code, response.content, response.reason_phrase,
                         retry_after(response.headers.get("retry-after")))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def health(self) -> dict[str, Any]:
        response = self.request("GET", f"{self.url}/api/health")  # outside /api/v1
        return dict(response.json())

    # -- ingest -----------------------------------------------------------------------------------

    def ingest(self, run_id: str, writer: str, recs: Sequence[Any]) -> tuple[int | None, int]:
        """Send records; returns the run's number and the server's cursor for this writer.

        A batch whose encoding exceeds what the server takes (long log lines, big configs), or that
        the server refuses as too large (413: too many values for one request), is sent in halves, in
        order."""
        import msgpack

        packed = wire.pack_ingest(run_id, writer, recs)
        if len(packed) > MAX_INGEST_BYTES and len(recs) > 1:
            return self._ingest_halves(run_id, writer, recs)
        try:
            response = self.request("POST", "/ingest", content=wire.deflate(packed),
                                    headers={"content-type": wire.MSGPACK, "content-encoding": wire.ENCODING_DEFLATE})
        except TooLarge:
            if len(recs) > 1:
                return self._ingest_halves(run_id, writer, recs)
            raise
        reply = msgpack.unpackb(response.content)
        return reply.get("run_number"), int(reply["cursor"])

    def _ingest_halves(self, run_id: str, writer: str, recs: Sequence[Any]) -> tuple[int | None, int]:
        half = len(recs) // 2
        self.ingest(run_id, writer, recs[:half])
        return self.ingest(run_id, writer, recs[half:])

    def ingest_cursor(self, run_id: str, writer: str) -> int:
        return int(self.get("/ingest/cursor", params={"run": run_id, "writer": writer})["cursor"])

    def put_blob(self, sha256: str, source: Path | BinaryIO) -> None:
        """Upload content named by its SHA-256 (the server checks the name): what is left to read of
        ``source``. From RESUMABLE_FROM bytes, in pieces that resume where an earlier attempt (this
        call's retries, or another process's) stopped, so a checkpoint cut short is not sent whole again."""
        if isinstance(source, Path):
            with source.open("rb") as f:
                self.put_blob(sha256, f)
            return
        start = source.tell()
        size = source.seek(0, os.SEEK_END) - start
        source.seek(start)
        if size >= RESUMABLE_FROM or start:
            # (A file body is sent by httpx with the whole file's length: what is left of a file
            # read part-way goes in pieces, each of exact length.)
            self._put_in_pieces(sha256, source, start, size)
            return
        self.request("PUT", f"/blobs/{sha256}", content=source, headers={"content-type": "application/octet-stream"})

    def _put_in_pieces(self, sha256: str, source: BinaryIO, start: int, size: int) -> None:

        offset, stored = self._upload_stands(sha256)
        waited = 0
        while not stored:
            if offset > size:
                raise ServerError(f"the server holds {offset} bytes of an upload of {size}: not this content")
            if offset == size:
                # Every byte arrived and the server is storing them: the answer to the last piece was
                # lost (a timeout while it stored a big file). Wait for it, rather than send again.
                waited = self._wait_a_while(waited, sha256)
                offset, stored = self._upload_stands(sha256)
                continue
            source.seek(start + offset)
            piece = source.read(PIECE_BYTES)
            if not piece:
                raise InvalidArgument(f"the file got shorter while it was uploaded ({start + offset} bytes of the "
                                      f"{start + size} it had): upload it again once it is written")
            headers = {"content-type": "application/octet-stream", "upload-offset": str(offset),
                       "upload-length": str(size)}
            try:
                answer = self.request("PUT", f"/blobs/{sha256}", content=piece, headers=headers).json()
            except (Conflict, ServerError):
                # A retry of a piece cut short (part of it arrived), a piece still arriving, a lost
                # answer: go on from what the server holds, after a pause that grows.
                waited = self._wait_a_while(waited, sha256)
                offset, stored = self._upload_stands(sha256)
                continue
            if "offset" not in answer:
                return  # that piece completed it: stored
            arrived = int(answer["offset"])
            if arrived <= offset:
                raise ServerError(f"the server took none of the piece sent at byte {offset} of {sha256[:12]}...")
            offset, waited = arrived, 0

    def _upload_stands(self, sha256: str) -> tuple[int, bool]:
        answer = self.request("GET", f"/blobs/{sha256}/upload").json()
        return int(answer["offset"]), bool(answer.get("stored"))

    @staticmethod
    def _wait_a_while(waited: int, sha256: str) -> int:
        """Sleep before asking again (0.2 s, doubling, at most 10 s; about 10 minutes in all)."""
        import time

        if waited >= UPLOAD_WAITS:
            raise ServerError(f"the upload of {sha256[:12]}... made no progress after {waited} tries; try again later")
        time.sleep(min(10.0, 0.2 * 2 ** waited))
        return waited + 1

    def missing_blobs(self, shas: Sequence[str]) -> list[str]:
        missing: list[str] = []
        for start in range(0, len(shas), MISSING_BATCH):  # a request body the server parses at once: keep it small
            batch = list(shas[start:start + MISSING_BATCH])
            missing += self.request("POST", "/blobs/missing", json={"sha256": batch}).json()["missing"]
        return missing


class RemoteStore:
    """The store calls the CLI and the read API make, answered by a server."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def list_projects(self) -> list[Project]:
        return [wire.project_in(p) for p in self.client.get("/projects")]

    def get_run(self, ref: str | int) -> Run:
        return wire.run_in(self.client.get(f"/runs/{_ref(ref)}"))

    def resolve(self, ref: str | int) -> int:
        return self.get_run(ref).number

    def list_runs(self, query: RunQuery) -> Page[Run]:
        params: dict[str, Any] = {"sort": query.sort, "order": "desc" if query.descending else "asc",
                                  "limit": query.limit, "label": list(query.labels),
                                  "status": [RunStatus(s).value for s in query.status],
                                  "kind": [RunKind(k).value for k in query.kinds]}
        if query.project is not None:
            params["project"] = query.project
        if query.cursor is not None:
            params["cursor"] = query.cursor
        return wire.page_in(self.client.get("/runs", params=params))

    def runs_with_status(self, statuses: Sequence[RunStatus]) -> list[Run]:
        from runyard.store.api import RunQuery

        out: list[Run] = []
        cursor = None
        while True:
            page = self.list_runs(RunQuery(status=list(statuses), limit=1000, cursor=cursor))
            out += page.items
            if (cursor := page.next_cursor) is None:
                return out

    def children_of(self, number: int) -> list[Run]:
        return [wire.run_in(r) for r in self.client.get(f"/runs/{number}/children")]

    def inputs_of(self, number: int) -> list[RunInput]:
        return [wire.input_in(i) for i in self.client.get(f"/runs/{number}/inputs")]

    def update_run(self, number: int, patch: RunPatch) -> Run:
        if any(getattr(patch, f) is not None for f in ("status", "status_message", "exit_code", "started_at",
                                                        "ended_at", "heartbeat_at", "config", "summary",
                                                        "environment")):
            raise InvalidArgument("over the API a run's name and notes can change, not its state")
        return self._patch(number, {"name": patch.name, "notes": patch.notes})

    def _patch(self, number: int, body: Mapping[str, Any]) -> Run:
        return wire.run_in(self.client.request("PATCH", f"/runs/{number}", json=dict(body)).json())

    def set_labels(self, number: int, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Run:
        return self._patch(number, {"add_labels": list(add), "remove_labels": list(remove)})

    def append_note(self, number: int, text: str) -> Run:
        return self._patch(number, {"append_note": text})

    def stop(self, number: int) -> str:
        return str(self.client.request("POST", f"/runs/{number}/stop").json()["message"])

    def rerun(self, number: int, params: Mapping[str, str], name: str | None,
              overrides: Mapping[str, Any] | None = None) -> int:
        """``overrides``: the rerun's pip, env, timeout, mounts and gpus, as the route's body names them."""
        body = {**(overrides or {}), "params": dict(params), "name": name}
        reply = self.client.request("POST", f"/runs/{number}/rerun", json=body)
        return int(reply.json()["number"])

    def list_series(self, run: int) -> list[SeriesInfo]:
        return [wire.series_in(s) for s in self.client.get(f"/runs/{run}/metrics")]

    def history(self, run: int, key: str, start: int | None = None, end: int | None = None) -> Points:
        import msgpack

        params = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        response = self.client.request("GET", f"/runs/{run}/points/{quote(key, safe='/')}", params=params,
                                       headers={"accept": wire.MSGPACK})
        return wire.points_in(msgpack.unpackb(response.content))

    def envelope(self, run: int, key: str, buckets: int = 1000, start: int | None = None,
                 end: int | None = None) -> Envelope:
        params: dict[str, Any] = {"buckets": buckets}
        params.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
        return wire.envelope_in(self.client.get(f"/runs/{run}/metrics/{quote(key, safe='/')}", params=params))

    def read_logs(self, run: int, after: int = 0, limit: int = 1000) -> list[LogLine]:
        return [wire.log_in(line) for line in
                self.client.get(f"/runs/{run}/logs", params={"after": after, "limit": min(limit, 10_000)})]

    def tail_logs(self, run: int, count: int) -> list[LogLine]:
        return [wire.log_in(line) for line in self.client.get(f"/runs/{run}/logs", params={"tail": count})]

    def list_artifacts(self, run: int, prefix: str = "") -> list[ArtifactEntry]:
        return [wire.artifact_in(a) for a in self.client.get(f"/runs/{run}/artifacts", params={"prefix": prefix})]

    def ingest_cursor(self, run_id: str, writer: str) -> int:
        return self.client.ingest_cursor(run_id, writer)

    def mark_lost(self, run_id: str, message: str) -> bool:
        reply = self.client.request("POST", f"/runs/{_ref(run_id)}/lost", json={"message": message[:2000]})
        return bool(reply.json()["changed"])

    # -- the model registry -----------------------------------------------------------------------

    def register_model(self, name: str, run: int, path: str, description: str = "", registered_by: str = "",
                       aliases: Sequence[str] = ()) -> ModelVersion:
        """``registered_by`` is the server's to say (the token's name): it is not sent."""
        body = {"run": str(run), "path": path, "description": description, "aliases": list(aliases)}
        return wire.model_version_in(self.client.request("POST", f"/models/{_ref(name)}/versions", json=body).json())

    def set_model_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        reply = self.client.request("PUT", f"/models/{_ref(name)}/aliases/{_ref(alias)}", json={"version": version})
        return wire.model_version_in(reply.json())

    def remove_model_alias(self, name: str, alias: str) -> int:
        reply = self.client.request("DELETE", f"/models/{_ref(name)}/aliases/{_ref(alias)}")
        return int(reply.json()["version"])

    def model_version(self, name: str, selector: str | None = None) -> ModelVersion:
        return wire.model_version_in(self.client.get(f"/models/{_ref(name)}/versions/{_ref(selector or 'latest')}"))

    def model_versions(self, name: str) -> list[ModelVersion]:
        return [wire.model_version_in(v) for v in self.client.get(f"/models/{_ref(name)}/versions")]

    def list_models(self) -> list[Model]:
        return [wire.model_in(m) for m in self.client.get("/models")]

    # -- alerts -----------------------------------------------------------------------------------

    def list_alert_rules(self, project: str | None = None, run: int | None = None) -> list[AlertRule]:
        params = {"project": project} if project is not None else {}
        rules = [wire.alert_rule_in(r) for r in self.client.get("/alert-rules", params=params)]
        return [r for r in rules if run is None or r.run == run]

    def add_alert_rule(self, rule: AlertRule) -> AlertRule:
        """Send a checked rule (the server checks it again, in the file's keys)."""
        from runyard.alerts.spec import file_form

        body = {"rule": file_form(rule.name, rule.kind, rule.spec, rule.action, rule.notify),
                "project": rule.project, "run": None if rule.run is None else str(rule.run)}
        return wire.alert_rule_in(self.client.request("POST", "/alert-rules", json=body).json())

    def remove_alert_rule(self, rule_id: int) -> bool:
        try:
            self.client.request("DELETE", f"/alert-rules/{rule_id}")
        except NotFound:
            return False
        return True

    def list_alert_events(self, run: int | None = None, unseen_only: bool = False) -> list[AlertEvent]:
        params: dict[str, Any] = {"unseen": unseen_only, "limit": 1000}
        if run is not None:
            params["run"] = run
        return [wire.alert_event_in(e) for e in self.client.get("/alerts", params=params)]

    def mark_alerts_seen(self, ids: Sequence[int]) -> None:
        if ids:
            self.client.request("POST", "/alerts/seen", json={"ids": list(ids)})

    def status_counts(self, since: float, project: str | None = None) -> dict[str, int]:
        """The caller's token decides the project (``project`` is for the local store's twin)."""
        return {k: int(v) for k, v in self.client.get("/status", params={"since": since}).items()}


class RemoteArtifacts:
    """Artifact downloads from a server, written under a destination like the local store's export."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def download(self, run: int, entry: ArtifactEntry, dest_root: Path, relpath: str) -> Path:
        return _download(self.client, f"/runs/{run}/artifacts/{quote(entry.path, safe='/')}", entry.sha256,
                         dest_root, relpath, entry.path)


def _download(client: Client, path: str, sha256: str, dest_root: Path, relpath: str, what: str) -> Path:
    """Stream ``GET path`` to ``dest_root/relpath`` (the local export's rules: no symlink in dest_root
    is followed), through a temporary file that replaces the target only once its SHA-256 matches."""
    import hashlib
    import os
    import tempfile

    import httpx

    from runyard.files import place

    client._authorize()
    target = place(dest_root, relpath)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, client.http.stream("GET", f"{wire.API_PREFIX}{path}") as response:
            if response.status_code >= 400:
                response.read()
                raise client._error(response)
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except httpx.TransportError as e:
        raise ServerError(f"downloading {what} from {client.url} failed: {e}") from None
    else:
        if digest.hexdigest() != sha256:
            raise ServerError(f"{what}: the downloaded content does not match its SHA-256; try again")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


class ServerBlobs:
    """The artifact store of a supervisor on a machine without the home (a Ray node): the server's
    content, read and written through its blob routes. What the supervisor and its code placement
    use of ``ArtifactStore``: reads are streamed to disk, writes are named by their SHA-256 first."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def size(self, sha256: str) -> int | None:
        self.client._authorize()
        with self.client.http.stream("GET", f"{wire.API_PREFIX}/blobs/{sha256}") as response:
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                response.read()
                raise self.client._error(response)
            return int(response.headers.get("content-length") or 0)  # the body is not read

    def has(self, sha256: str) -> bool:
        return not self.client.missing_blobs([sha256])

    def exists(self, content_ref: str) -> bool:
        return self.has(content_ref.removeprefix("sha256:"))

    def read_bytes(self, content_ref: str) -> bytes:
        return bytes(self.client.request("GET", f"/blobs/{content_ref.removeprefix('sha256:')}").content)

    def share(self, content_ref: str, dest_root: Path, relpath: str, hard_link: bool) -> str | None:
        return None  # nothing here to share: every file is downloaded

    def export(self, content_ref: str, dest_root: Path, relpath: str) -> Path:
        """Download a blob to ``dest_root/relpath`` (the local export's rules), checking its SHA-256."""
        sha = content_ref.removeprefix("sha256:")
        return _download(self.client, f"/blobs/{sha}", sha, dest_root, relpath, sha)

    def put_stream(self, src: BinaryIO) -> Any:
        """Upload a seekable file's content (read twice: to name it, then to send it)."""
        import hashlib

        from runyard.store.artifacts import Blob

        start = src.tell()
        digest = hashlib.sha256()
        while chunk := src.read(1 << 20):
            digest.update(chunk)
        size = src.tell() - start
        src.seek(start)
        self.client.put_blob(digest.hexdigest(), src)
        return Blob(digest.hexdigest(), size)

    def put_file(self, source: Path, progress: Any = None) -> Any:
        with source.open("rb") as f:
            blob = self.put_stream(f)
        if progress is not None:
            progress(blob.size)
        return blob
