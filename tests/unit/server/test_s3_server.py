"""A server whose artifact store is S3 (a real one: SeaweedFS): uploads go to the bucket, the missing
list is answered from it, and downloads stream from it by ranges."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.s3server import S3Server
from tests.unit.server.conftest import BASE, home_env
from tests.unit.server.test_api import INGEST_HEADERS, _ingest_body, _start

from runyard.config import resolve
from runyard.server.app import create_app
from runyard.store.home import open_store
from runyard.store.s3_artifacts import S3Artifacts


@pytest.fixture
def s3_app(tmp_path: Path, s3_server: S3Server, s3_location: str) -> Iterator[tuple[TestClient, S3Artifacts]]:
    env = {**home_env(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'runyard.db'}"),
           "RUNYARD_ARTIFACTS": s3_location, "RUNYARD_S3_ENDPOINT": s3_server.endpoint}
    settings = resolve(environ=env, cwd=tmp_path)
    opened = open_store(settings)
    try:
        app = create_app(settings, opened.store, opened.artifacts, "127.0.0.1", 8765, insecure_local=True)
        with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
            yield client, S3Artifacts.from_url(s3_location, endpoint=s3_server.endpoint, scratch=tmp_path / "check")
    finally:
        opened.close()


def test_blobs_uploaded_to_the_server_land_in_s3_and_download_by_ranges(
        s3_app: tuple[TestClient, S3Artifacts]) -> None:
    client, bucket = s3_app
    data = os.urandom(3 << 20)
    sha = hashlib.sha256(data).hexdigest()
    absent = hashlib.sha256(b"never uploaded").hexdigest()
    assert client.post("/api/v1/blobs/missing", json={"sha256": [sha, absent]}).json()["missing"] == [sha, absent]
    put = client.put(f"/api/v1/blobs/{sha}", content=data, headers={"content-type": "application/octet-stream"})
    assert put.status_code == 200, put.text
    assert bucket.has(sha)  # in the bucket, not on the server's disk
    assert client.post("/api/v1/blobs/missing", json={"sha256": [sha, absent]}).json()["missing"] == [absent]
    run_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    body = _ingest_body(run_id, [_start(), [1, "a", 1.0, "ckpt.bin", len(data), sha, f"sha256:{sha}"]])
    assert client.post("/api/v1/ingest", content=body, headers=INGEST_HEADERS).status_code == 200
    whole = client.get(f"/api/v1/runs/{run_id}/artifacts/ckpt.bin")
    assert whole.status_code == 200 and whole.content == data
    part = client.get(f"/api/v1/runs/{run_id}/artifacts/ckpt.bin", headers={"range": "bytes=1048576-1048675"})
    assert part.status_code == 206 and part.content == data[1 << 20:(1 << 20) + 100]
