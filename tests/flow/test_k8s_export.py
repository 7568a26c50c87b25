"""`runyard serve RUN:PATH --export k8s DIR` (serve/export.py) on real runs: a launched script that
uses the SDK and writes a model, exported from the local home and through a server. Docker is not
here: the build context is checked for holding everything its Dockerfile names, and the manifests
against the Kubernetes API's schema (kubernetes-validate, offline)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.flow.test_execution import TERMINAL, api_of, launch, log_of, wait_status
from tests.unit.server.conftest import LiveServer, client_env
from tests.unit.server.conftest import live_server as live_server

from runyard.api import Api
from runyard.config import resolve
from runyard.errors import Conflict, InvalidArgument, NotFound
from runyard.serve.export import export_k8s

pytestmark = pytest.mark.timeout(300)

TRAIN = """\
import os
import runyard

run = runyard.init(project="digits")
os.makedirs("outputs/model", exist_ok=True)
with open("outputs/model/weights.bin", "wb") as f:
    f.write(bytes(range(256)) * 8)
with open("outputs/model/config.json", "w") as f:
    f.write('{"classes": 10}')
with open("outputs/metrics.txt", "w") as f:
    f.write("not the model")
run.log({"loss": 0.25})
run.finish()
"""

HANDLER = """\
class Digits:
    def load(self, model_dir):
        self.weights = open(f"{model_dir}/weights.bin", "rb").read()

    def predict(self, pixels: list[float]) -> int:
        return 7
"""


def project_at(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "serving").mkdir()
    (root / "serving" / "handler.py").write_text(HANDLER)
    return root


@dataclass
class Exported:
    dest: Path
    written: list[Path]
    run: Any  # the store's Run record
    env: dict[str, str]
    project: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """One launched run, exported once (building runyard's wheel takes a while); the tests read it."""
    import os

    tmp = tmp_path_factory.mktemp("k8s")
    project = project_at(tmp / "project")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env = {**keep, "RUNYARD_HOME": str(tmp / "home"), "RUNYARD_SYSTEM_INTERVAL": "0", "RUNYARD_SLOTS": "2",
           "RUNYARD_OUTPUTS_INTERVAL": "0.3"}
    number = launch(env, project, "--name", "Digits CNN", "--", sys.executable, "train.py")
    assert wait_status(env, project, number, TERMINAL, 120) == "finished", log_of(env, project, number)
    api = api_of(env, project)
    try:
        run = api.store.get_run(number)
        dest = tmp / "export"
        told: list[tuple[int, int]] = []
        written = export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "Digits CNN", dest,
                             port=9000, replicas=2, progress=lambda done, total: told.append((done, total)))
        assert told[-1] == (2048 + 15, 2048 + 15)
        yield Exported(dest, written, run, env, project)
    finally:
        api.close()


def docs_of(dest: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((dest / "k8s.yaml").read_text()) if doc]


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continued lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copy_sources(args: str) -> list[str]:
    """The sources of a COPY or ADD (exec form or shell form), without --flags and the destination."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def test_the_manifests_validate_against_the_kubernetes_schema_and_probe_ready_and_health(
        exported: Exported) -> None:
    import kubernetes_validate

    docs = docs_of(exported.dest)
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    deployment, service = docs
    dns1123 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "digits-cnn"
    assert dns1123.fullmatch(deployment["metadata"]["name"])
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    assert dns1123.fullmatch(container["name"])
    assert container["image"] == f"digits-cnn:{exported.run.number}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9000}

    def probed(probe: dict[str, Any]) -> tuple[str, int]:
        port = probe["httpGet"]["port"]
        return probe["httpGet"]["path"], ports[port] if isinstance(port, str) else port

    assert probed(container["startupProbe"]) == ("/ready", 9000)
    assert probed(container["readinessProbe"]) == ("/ready", 9000)
    assert probed(container["livenessProbe"]) == ("/health", 9000)
    assert container["resources"]["requests"]["memory"] and container["resources"]["requests"]["cpu"]
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["metadata"]["annotations"] == {"runyard.dev/run": str(exported.run.number),
                                                     "runyard.dev/run-id": exported.run.id,
                                                     "runyard.dev/model": "outputs/model"}
    # The Service: ClusterIP, port 80 to the container's port, selecting the Deployment's pods.
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    assert port["port"] == 80 and (ports[target] if isinstance(target, str) else target) == 9000
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()


def test_the_build_context_holds_everything_its_dockerfile_names(exported: Exported) -> None:
    dest = exported.dest
    assert [p.name for p in exported.written] == sorted(
        [".dockerignore", "Dockerfile", "README.md", "code", "k8s.yaml", "model", "requirements.txt", "wheels"])
    steps = instructions((dest / "Dockerfile").read_text())
    ignored = [line for line in (dest / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    copies = [copy_sources(args) for word, args in steps if word in ("COPY", "ADD")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (dest / source).exists(), f"the Dockerfile copies {source}, which the context lacks"
            assert source.rstrip("/") not in ignored, f"{source} is excluded by .dockerignore"
    # The run's Python, runyard's server as the command, an unprivileged user, the port, a health check.
    python = ".".join(exported.run.environment["python"].split(".")[:2])
    assert steps[0] == ("FROM", f"python:{python}-slim")
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd == ["python", "-m", "runyard.serve.main", "--handler", "serving/handler.py:Digits",
                   "--model", "/model", "--host", "0.0.0.0", "--port", "9000"]
    assert dict(steps)["USER"].split(":")[0] not in ("0", "root")
    assert dict(steps)["EXPOSE"] == "9000"
    assert "/health" in dict(steps)["HEALTHCHECK"]
    # Packages, then runyard, then the model, then the code: a code edit leaves the model's layer alone.
    order = [sources[0] for sources in copies]
    assert order.index("requirements.txt") < order.index("model/") < order.index("code/")
    # What those copies hold: the model's files (not the run's other outputs), the handler, the wheel.
    assert sorted(p.name for p in (dest / "model").iterdir()) == ["config.json", "weights.bin"]
    assert (dest / "model" / "weights.bin").read_bytes() == bytes(range(256)) * 8
    assert (dest / "code" / "serving" / "handler.py").read_text() == HANDLER
    assert (dest / "code" / "train.py").is_file()
    assert not (dest / "code" / "outputs").exists()  # outputs are not code
    (wheel,) = (dest / "wheels").glob("runyard-*.whl")
    from runyard import __version__

    assert wheel.name.startswith(f"runyard-{__version__}-")
    assert f'"runyard[serve]=={__version__}"' in (dest / "Dockerfile").read_text()
    # An unprivileged user reads it all.
    for path in dest.rglob("*"):
        assert path.stat().st_mode & 0o004, f"{path} is not world-readable"


def test_requirements_list_the_runs_pinned_packages(exported: Exported) -> None:
    recorded = exported.run.environment["packages"]
    assert len(recorded) > 10  # the SDK listed this environment's packages
    lines = [ln for ln in (exported.dest / "requirements.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert all("==" in ln for ln in lines)
    names = {ln.split("==")[0].lower() for ln in lines}
    assert "runyard" not in names and "pip" not in names  # installed by their own steps
    assert set(lines) == {p for p in recorded if p.split("==")[0].lower() not in ("runyard", "pip")}
    assert any(ln.lower().startswith("numpy==") for ln in lines)


def test_the_readme_says_how_to_build_apply_and_try(exported: Exported) -> None:
    readme = (exported.dest / "README.md").read_text()
    for step in ("docker build", "docker push", "kubectl apply -f k8s.yaml",
                 "kubectl port-forward service/digits-cnn 9000:80", "curl"):
        assert step in readme
    assert f"digits-cnn:{exported.run.number}" in readme


def test_refusals_name_the_fault_and_write_nothing(exported: Exported, tmp_path: Path) -> None:
    api = api_of(exported.env, exported.project)
    run = exported.run
    try:
        dest = tmp_path / "out"
        with pytest.raises(NotFound, match=r"no artifact outputs/nothing to serve .*top-level artifacts: outputs"):
            export_k8s(api, run, "outputs/nothing", "serving/handler.py:Digits", "digits", dest)
        with pytest.raises(NotFound, match=r"has no serve\.py .*serving/handler\.py"):
            export_k8s(api, run, "outputs/model", "serve.py:Digits", "digits", dest)
        with pytest.raises(NotFound, match=r"defines no Digit \(its classes: Digits\)"):
            export_k8s(api, run, "outputs/model", "serving/handler.py:Digit", "digits", dest)
        with pytest.raises(InvalidArgument, match=r"expected FILE\.py:Class"):
            export_k8s(api, run, "outputs/model", "serving/handler.py", "digits", dest)
        with pytest.raises(InvalidArgument, match="name '---'"):
            export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "---", dest)
        assert not dest.exists()
        # A non-empty directory is refused, unless forced; forced, only what an export writes is replaced.
        dest.mkdir()
        (dest / "mine.txt").write_text("keep me")
        (dest / "Dockerfile").write_text("FROM scratch\n")
        with pytest.raises(Conflict, match="is not empty"):
            export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "digits", dest)
        assert (dest / "Dockerfile").read_text() == "FROM scratch\n"
        # An export that fails half-way (here, building runyard's wheel) leaves the directory as it was.
        from runyard.serve import export

        def broken(source: Path, wheels: Path) -> None:
            wheels.mkdir()
            raise InvalidArgument("building runyard's wheel failed")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(export, "_build_wheel", broken)
            with pytest.raises(InvalidArgument, match="wheel"):
                export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "digits", dest, force=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged is left behind
        assert sorted(p.name for p in dest.iterdir()) == ["Dockerfile", "mine.txt"]
        assert (dest / "Dockerfile").read_text() == "FROM scratch\n"
        with pytest.raises(Conflict, match="is a file"):
            export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "digits", dest / "mine.txt")
        # A single file as the model; the wheel is built again (this runyard is a source tree).
        written = export_k8s(api, run, "outputs/model/weights.bin", "serving/handler.py:Digits", "digits", dest,
                             force=True)
        assert (dest / "mine.txt").read_text() == "keep me"
        assert "mine.txt" not in {p.name for p in written}
        assert sorted(p.name for p in (dest / "model").iterdir()) == ["weights.bin"]
        assert (dest / "Dockerfile").read_text().startswith("# The model server of run")
    finally:
        api.close()


def test_a_run_without_a_snapshot_is_refused(tmp_path: Path) -> None:
    """An SDK run started by hand has artifacts but no code snapshot: nothing to build the server from."""
    import os

    keep = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env = {**keep, "RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"}
    script = tmp_path / "by_hand.py"
    script.write_text(textwrap.dedent("""
        import runyard
        run = runyard.init(project="p")
        open("model.bin", "wb").write(b"m")
        run.log_artifact("model.bin", "outputs/model.bin")
        run.finish()
    """))
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with Api(resolve(environ=env, cwd=tmp_path)) as api:
        (run,) = api.runs(limit=1)
        with pytest.raises(NotFound, match="no code snapshot"):
            export_k8s(api, run.record, "outputs/model.bin", "serve.py:Model", "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.engines("sqlite")
def test_export_through_a_server_client(live_server: LiveServer, tmp_path: Path) -> None:
    """With RUNYARD_SERVER set, the code comes from the server's blobs and the model from its artifacts."""
    import kubernetes_validate

    project = project_at(tmp_path / "project")
    env = client_env(tmp_path / "laptop", live_server.url)
    submitted = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "-f", "--", sys.executable,
                                "train.py"], env=env, cwd=project, capture_output=True, text=True, timeout=180)
    assert submitted.returncode == 0, submitted.stderr
    with Api(resolve(environ=env, cwd=project)) as api:
        assert api.remote
        run = api.store.get_run(1)
        dest = tmp_path / "export"
        export_k8s(api, run, "outputs/model", "serving/handler.py:Digits", "digits", dest)
    assert (dest / "model" / "weights.bin").read_bytes() == bytes(range(256)) * 8
    assert (dest / "code" / "serving" / "handler.py").read_text() == HANDLER
    for doc in docs_of(dest):
        kubernetes_validate.validate(doc, "1.31", strict=True)
    lines = [ln for ln in (dest / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert any(ln.lower().startswith("numpy==") for ln in lines)
