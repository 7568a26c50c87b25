"""A home whose artifacts live in S3 (a real server: SeaweedFS): `runyard run` snapshots the code into
the bucket, the run executes that code and its outputs land in the bucket, `runyard cp` brings them
back; a damaged object or an unreachable server is one line on stderr, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.flow.test_execution import TERMINAL, api_of, cli, log_of, project, wait_status
from tests.flow.test_execution import env as plain_env
from tests.s3server import CREDENTIALS, S3Server

from runyard.agent import stop_agents
from runyard.config import resolve
from runyard.store.s3_artifacts import S3Artifacts

__all__ = ["plain_env", "project"]  # fixtures, imported to be used here

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def env(plain_env: dict[str, str], s3_server: S3Server, s3_location: str) -> dict[str, str]:
    return {**plain_env, **CREDENTIALS, "RUNYARD_ARTIFACTS": s3_location, "RUNYARD_S3_ENDPOINT": s3_server.endpoint}


def bucket_store(env: dict[str, str], tmp_path: Path) -> S3Artifacts:
    return S3Artifacts.from_url(env["RUNYARD_ARTIFACTS"], endpoint=env["RUNYARD_S3_ENDPOINT"],
                                scratch=tmp_path / "check")


def test_a_run_gets_its_code_from_s3_and_its_outputs_go_there_and_come_back(
        project: Path, env: dict[str, str], tmp_path: Path) -> None:
    (project / "data.txt").write_text("original")
    (project / "train.py").write_text(
        "import json, os\n"
        "print(open('data.txt').read())\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.bin', 'wb').write(b'weights ' * 1000)\n"
        "print(json.dumps({'step': 0, 'loss': 0.25}))\n"
        "import runyard\n"
        "run = runyard.init()\n"
        "import tempfile\n"
        "notes = os.path.join(tempfile.mkdtemp(), 'n.txt')  # outside the work directory: not an output\n"
        "open(notes, 'w').write('logged through the SDK')\n"
        "run.log_artifact(notes, name='sdk-notes.txt')\n"
        "run.finish()\n"
    )
    try:
        queued = json.loads(cli(env, project, "run", "--json", "--", sys.executable, "train.py").stdout)
        number = queued["number"]
        (project / "data.txt").write_text("edited after submission")  # must not reach the run
        assert wait_status(env, project, number, TERMINAL) == "finished", log_of(env, project, number)
        home = Path(env["RUNYARD_HOME"])
        assert not (home / "artifacts" / "objects").exists()  # nothing went to the home's disk store
        api = api_of(env, project)
        try:
            run = api.run(number)
            assert "original" in [line.text for line in run.logs()]
            model = next(a for a in run.artifacts() if a.path == "outputs/model.bin")
            notes = next(a for a in run.artifacts() if a.path == "sdk-notes.txt")  # staged by the SDK, stored by ingest
            snapshot = run.snapshot_id
        finally:
            api.close()
        bucket = bucket_store(env, tmp_path)
        # the code, the output and the logged artifact are in the bucket
        assert bucket.has(model.sha256) and bucket.exists(snapshot) and bucket.has(notes.sha256)
        cli(env, project, "cp", f"{number}:outputs/model.bin", str(tmp_path / "model.bin"))
        assert (tmp_path / "model.bin").read_bytes() == b"weights " * 1000
        # Submitting again stores only what changed (data.txt), and then nothing.
        again = json.loads(cli(env, project, "run", "--json", "--", sys.executable, "train.py").stdout)
        assert again["snapshot_new_bytes"] == len("edited after submission") < queued["snapshot_new_bytes"]
        unchanged = json.loads(cli(env, project, "run", "--json", "--", sys.executable, "train.py").stdout)
        assert unchanged["snapshot_new_bytes"] == 0
        for later in (again["number"], unchanged["number"]):
            assert wait_status(env, project, later, TERMINAL) == "finished"

        # Someone overwrote the object in the bucket: cp says so in one line and writes nothing.
        raw = bucket.client()
        raw.put_object(Bucket=bucket.bucket, Key=bucket._object_key(model.sha256), Body=b"tampered")
        damaged = cli(env, project, "cp", f"{number}:outputs/model.bin", str(tmp_path / "bad.bin"), check=False)
        assert damaged.returncode == 1 and "is damaged" in damaged.stderr, damaged.stderr
        assert "Traceback" not in damaged.stderr and len(damaged.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "bad.bin").exists()
        raw.delete_object(Bucket=bucket.bucket, Key=bucket._object_key(model.sha256))
        gone = cli(env, project, "cp", f"{number}:outputs/model.bin", str(tmp_path / "gone.bin"), check=False)
        assert gone.returncode != 0 and "missing from s3://" in gone.stderr, gone.stderr
        assert "Traceback" not in gone.stderr
    finally:
        stop_agents(resolve(environ=env, cwd=project).home)


def test_an_unreachable_s3_server_is_one_line_from_run_and_doctor(project: Path, env: dict[str, str]) -> None:
    dead = {**env, "RUNYARD_S3_ENDPOINT": "http://127.0.0.1:1"}
    result = cli(dead, project, "run", "--", "python", "train.py", check=False)
    assert result.returncode == 1, result
    assert result.stderr.startswith("runyard: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach" in result.stderr and "http://127.0.0.1:1" in result.stderr
    doctor = {c["name"]: c for c in json.loads(cli(dead, project, "doctor", "--json", check=False).stdout)["checks"]}
    assert doctor["artifacts"]["status"] == "fail" and "cannot reach" in doctor["artifacts"]["detail"]
    alive = {c["name"]: c for c in json.loads(cli(env, project, "doctor", "--json", check=False).stdout)["checks"]}
    assert alive["artifacts"]["status"] == "ok", alive["artifacts"]
    assert alive["artifacts"]["detail"].startswith(f"s3 {env['RUNYARD_ARTIFACTS']} at {env['RUNYARD_S3_ENDPOINT']}")
