"""`runyard serve RUN:PATH --export k8s DIR`: a run's model server as a Docker build context and
Kubernetes manifests, for whoever deploys it.

DIR receives::

    Dockerfile          slim Python of the run's major.minor; layers from the least to the most often changed
    .dockerignore
    requirements.txt    the run's packages, pinned as it recorded them
    wheels/             runyard built from its source tree, when that is how it is installed (else a pin)
    model/              the run's artifacts under PATH: the server's --model
    code/               the run's code snapshot: the server's working directory, where the handler lives
    k8s.yaml            a Deployment (probes on /ready and /health) and a ClusterIP Service
    README.md           build, push, apply, try

Nothing is written until everything needed has been found (the run's code, the model, the handler
file), so a refused export leaves DIR as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.errors import Conflict, InvalidArgument, NotFound

if TYPE_CHECKING:
    from runyard.api import Api
    from runyard.store.api import ArtifactEntry, Run

__all__ = ["UID", "RunyardInstall", "dns_label", "dockerfile", "export_k8s", "manifests", "python_version", "readme",
           "requirements", "yaml_documents"]

#: The unprivileged user the image runs as (the manifests say runAsNonRoot with it).
UID = 10001
#: Where the model's files are in the image (the server's ``--model``), and the code (its working directory).
MODEL_DIR = "/model"
CODE_DIR = "/app"
#: What DIR holds that this module writes; ``force`` replaces these and leaves anything else alone.
WRITTEN = ("Dockerfile", ".dockerignore", "requirements.txt", "wheels", "model", "code", "k8s.yaml", "README.md")
#: Installed apart from the run's packages: runyard (its own layer) and pip (the base image's).
NOT_PINNED = frozenset({"runyard", "pip"})
#: A load that has not finished after this long is restarted (startupProbe: period × threshold).
STARTUP_SECONDS = 600


@dataclass(frozen=True)
class RunyardInstall:
    """How the image gets runyard: the pinned requirement, and the source tree to build a wheel of
    (or the wheel file) for the context; None when runyard came from an index, where the pin finds it."""

    requirement: str
    wheel_from: Path | None


def dns_label(name: str) -> str:
    """``name`` as a DNS-1035 label (lowercase letters, digits and '-', a letter first, at most 63
    characters), which Kubernetes requires of a Service's name and accepts for the rest."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)
    if label and not label[0].isalpha():
        label = f"m-{label}"
    label = label[:63].rstrip("-")
    if not label:
        raise InvalidArgument(f"name {name!r}: needs at least one letter or digit to make a Kubernetes name")
    return label


def export_k8s(api: Api, run: Run, model_path: str, handler: str, name: str | None, dest: Path, *,
               port: int = 8080, replicas: int = 1, force: bool = False,
               progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write a Docker build context and Kubernetes manifests serving ``run``'s model into ``dest``.

    Args:
        api: the read API (a local home or a server's client) that holds ``run``.
        run: a run launched with ``runyard run`` (it has a code snapshot).
        model_path: the run's artifact (a file) or artifact directory holding the model.
        handler: ``FILE.py:Class``, FILE relative to the run's code.
        name: the deployment's name, made a DNS label (``dns_label``); None: the run's name, else its
            project. The image is ``NAME:RUN-NUMBER``.
        dest: a directory that does not exist or is empty (else ``force``).
        port: the port the server listens on in the container.
        replicas: the Deployment's replicas.
        force: write into a non-empty ``dest``, replacing what an earlier export wrote there.
        progress: told (bytes written, of how many) as the model's files are copied.

    Returns:
        The entries written directly under ``dest``, sorted.

    Raises:
        InvalidArgument: a malformed handler, name, port or replicas.
        NotFound: the run has no artifact at ``model_path``, no code snapshot, no handler file, or
            the file defines no such class.
        Conflict: ``dest`` is a file, or a non-empty directory without ``force``.
    """
    file, cls = _handler(handler)
    label = dns_label(name if name is not None else run.name or run.project)
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"port {port}: expected 1-65535")
    if replicas < 0:
        raise InvalidArgument(f"replicas {replicas}: expected 0 or more")
    _check_dest(dest, force)
    model = _model_files(api, run, model_path)
    snapshot_id = run.snapshot_id
    if not snapshot_id:
        raise NotFound(f"run {run.number} has no code snapshot (it was not launched with `runyard run`): "
                       "the image needs the code its handler is in")
    from runyard.exec.snapshot import manifest_of

    content = api.content
    code_files = manifest_of(snapshot_id, content)
    if file not in code_files:
        scripts = sorted(p for p in code_files if p.endswith(".py"))[:10]
        raise NotFound(f"handler {handler!r}: run {run.number}'s code has no {file} "
                       f"(its Python files: {', '.join(scripts) or 'none'})")
    _check_defines(content.read_bytes(f"sha256:{code_files[file][0]}"), file, cls, run.number)
    how = _runyard_install()

    # Everything is written beside DIR first and moved in at the end (renames on one file system), so
    # an export that fails half-way (a download, the wheel's build) leaves DIR as it was.
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.export-"))
    try:
        _write(api, run, staging, model, snapshot_id, how, handler, cls, label, model_path, port, replicas, progress)
        dest.mkdir(exist_ok=True)
        for entry in WRITTEN:
            target = dest / entry
            if force and target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif force:
                target.unlink(missing_ok=True)
            if (staging / entry).exists():
                (staging / entry).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(dest / entry for entry in WRITTEN if (dest / entry).exists())


def _write(api: Api, run: Run, dest: Path, model: Sequence[tuple[ArtifactEntry, str]], snapshot_id: str,
           how: RunyardInstall, handler: str, cls: str, label: str, model_path: str, port: int, replicas: int,
           progress: Callable[[int, int], None] | None) -> None:
    from runyard.exec.snapshot import materialise

    _copy_model(api, run, model, dest / "model", progress)
    materialise(snapshot_id, api.content, dest / "code")
    if how.wheel_from is not None:
        _build_wheel(how.wheel_from, dest / "wheels")
    _readable(dest)
    (dest / "requirements.txt").write_text(requirements(run))
    (dest / "Dockerfile").write_text(dockerfile(run, python_version(run), how, handler, port))
    (dest / ".dockerignore").write_text(DOCKERIGNORE)
    model_bytes = sum(a.size for a, _ in model)
    (dest / "k8s.yaml").write_text(yaml_documents(manifests(run, label, port, replicas, model_bytes, model_path)))
    (dest / "README.md").write_text(readme(run, label, port, model_path, cls))


# -- checks ---------------------------------------------------------------------------------------

def _handler(handler: str) -> tuple[str, str]:
    file, sep, cls = handler.partition(":")
    if not sep or not file.endswith(".py") or not cls.isidentifier():
        raise InvalidArgument(f"handler {handler!r}: expected FILE.py:Class, e.g. serve.py:Model")
    from runyard.names import validate_relpath

    validate_relpath(file)
    return file, cls


def _check_defines(source: bytes, file: str, cls: str, number: int) -> None:
    """Refuse a handler class that ``file`` does not define (a class, an assignment or an import of
    that name): a typo found now, not after building and pushing an image."""
    import ast

    try:
        tree = ast.parse(source, file)
    except (SyntaxError, ValueError) as e:
        raise InvalidArgument(f"{file} in run {number}'s code does not parse: {e}") from None
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
    if cls not in names:
        classes = sorted(n.name for n in tree.body if isinstance(n, ast.ClassDef))
        raise NotFound(f"handler {file}:{cls}: {file} in run {number}'s code defines no {cls} "
                       f"(its classes: {', '.join(classes) or 'none'})")


def _check_dest(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise Conflict(f"{dest} is a file: name a directory to export into")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise Conflict(f"{dest} is not empty: name a new or empty directory, or pass --force to replace "
                       "what an earlier export wrote there")


def _model_files(api: Api, run: Run, model_path: str) -> list[tuple[ArtifactEntry, str]]:
    """The artifacts of the model, each with its path under model/: a file by its name, a
    directory's files by their path inside it."""
    path = model_path.strip("/")
    if not path:
        raise InvalidArgument("the model path is empty: name the run's model file or directory, e.g. 62:outputs/model")
    api.sync(runs=[run.id])  # what the run stored a moment ago may still be in its spool
    entries = api.store.list_artifacts(run.number)
    exact = [(a, a.path.rsplit("/", 1)[-1]) for a in entries if a.path == path]
    under = [(a, a.path[len(path) + 1:]) for a in entries if a.path.startswith(path + "/")]
    if not exact and not under:
        known = ", ".join(sorted({a.path.split("/")[0] for a in entries})[:10]) or "none"
        raise NotFound(f"run {run.number} has no artifact {path} to serve (its top-level artifacts: {known})")
    return exact or under


def _copy_model(api: Api, run: Run, files: Sequence[tuple[ArtifactEntry, str]], root: Path,
                progress: Callable[[int, int], None] | None) -> None:
    total = sum(a.size for a, _ in files)
    done = 0
    root.mkdir()
    for entry, rel in files:
        api.export(run, entry, root, rel)
        done += entry.size
        if progress is not None:
            progress(done, total)


def _readable(dest: Path) -> None:
    """Make the context world-readable (executables stay executable): the image runs as an
    unprivileged user, and exported artifacts may be 0600 or read-only to their owner."""
    for path in [dest, *dest.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
            path.chmod(0o755)
        else:
            path.chmod(0o644)


# -- runyard in the image -------------------------------------------------------------------------

def _runyard_install() -> RunyardInstall:
    """A pinned ``runyard[serve]==VERSION`` resolves only if that version is on the index the image
    installs from; a runyard installed from a source tree (editable, a development checkout) is
    usually not there, or not with this code. Then its wheel is built into the context, so the
    context alone builds the image, with the runyard that made the export."""
    from importlib import metadata

    from runyard import __version__

    requirement = f"runyard[serve]=={__version__}"
    try:
        direct = metadata.distribution("runyard").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    source = None
    if direct:
        url = str(json.loads(direct).get("url", ""))
        if url.startswith("file://"):
            from urllib.parse import unquote, urlparse

            candidate = Path(unquote(urlparse(url).path))
            if (candidate / "pyproject.toml").is_file() or (candidate.suffix == ".whl" and candidate.is_file()):
                source = candidate  # a source tree, or a wheel installed from a file: copied as it is
    return RunyardInstall(requirement, source)


def _build_wheel(source: Path, wheels: Path) -> None:
    import subprocess
    from importlib.util import find_spec

    wheels.mkdir()
    if source.suffix == ".whl":
        shutil.copyfile(source, wheels / source.name)
        return
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--wheel-dir", str(wheels), str(source)]
    if find_spec("hatchling") is not None:  # present: build with it, offline and faster than an isolated build
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not list(wheels.glob("runyard-*.whl")):
        raise InvalidArgument(f"building runyard's wheel from {source} failed (pip wheel exited "
                              f"{done.returncode}): {done.stderr.strip()[-800:]}")


# -- the files ------------------------------------------------------------------------------------

def python_version(run: Run) -> str:
    """The run's Python as major.minor (from its recorded environment), else this interpreter's."""
    recorded = str((run.environment or {}).get("python") or "")
    found = re.match(r"(\d+)\.(\d+)", recorded)
    if found:
        return f"{found[1]}.{found[2]}"
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirements(run: Run) -> str:
    """requirements.txt: the packages the run recorded (``name==version``, from the SDK's
    environment facts), else the ``--pip`` and ``--requirements`` it was launched with."""
    from packaging.utils import canonicalize_name

    def kept(line: str) -> bool:
        name = re.split(r"[\s\[<>=!~;@]", line.strip(), maxsplit=1)[0]
        return bool(name) and canonicalize_name(name) not in NOT_PINNED

    head = [f"# The packages of run {run.number} ({run.id}), made by `runyard serve --export k8s`."]
    packages = [str(p) for p in (run.environment or {}).get("packages") or []]
    if packages:
        head.append("# As the run recorded them (pinned); runyard itself is installed by the Dockerfile.")
        local = [p for p in packages if "+" in p.partition("==")[2]]
        if local:  # torch==2.3.0+cu121 and the like are on their maker's index, not on PyPI
            head.append(f"# {', '.join(local[:3])} carry a local version: add the index they came from, e.g.")
            head.append("# --extra-index-url https://download.pytorch.org/whl/cu121")
        return "\n".join([*head, *sorted((p for p in packages if kept(p)), key=str.lower), ""])
    launch = run.launch or {}
    asked = [str(p) for p in launch.get("pip") or []]
    asked += [ln.split(" #")[0].strip() for ln in str(launch.get("requirements") or "").replace("\\\n", "").splitlines()
              if ln.strip() and not ln.lstrip().startswith("#")]
    head.append("# The run recorded no package list (it did not use runyard's SDK): these are what it was")
    head.append("# launched with (--pip, --requirements). Pin them (pip freeze where it ran) for a reproducible image.")
    return "\n".join([*head, *(a for a in asked if kept(a)), ""])


def dockerfile(run: Run, python: str, how: RunyardInstall, handler: str, port: int) -> str:
    cmd = ["python", "-m", "runyard.serve.main", "--handler", handler, "--model", MODEL_DIR,
           "--host", "0.0.0.0", "--port", str(port)]  # noqa: S104 - inside the container, by design
    install = (f'RUN pip install --find-links /tmp/wheels "{how.requirement}" && rm -rf /tmp/wheels'
               if how.wheel_from else f'RUN pip install "{how.requirement}"')
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4)"
    lines = [
        f"# The model server of run {run.number} ({run.id}), made by `runyard serve --export k8s`.",
        "# Layers go from what changes least to what changes most: a code edit rebuilds only the last one,",
        "# and never re-pushes the model's files.",
        f"FROM python:{python}-slim",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        # A home of its own: libraries cache downloads under ~/.cache (the code and model are read-only).
        f"RUN useradd --uid {UID} --user-group --create-home --shell /usr/sbin/nologin serve",
        "",
        "# The run's packages, pinned as it recorded them.",
        "COPY requirements.txt /tmp/requirements.txt",
        "RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt",
        "",
        "# runyard's model server.",
        *(["COPY wheels/ /tmp/wheels/"] if how.wheel_from else []),
        install,
        "",
        "# The model, before the code: its layer stays cached (and pushed) when only the code changes.",
        f"COPY model/ {MODEL_DIR}/",
        "",
        "# The run's code: the server's working directory, where its handler is.",
        f"COPY code/ {CODE_DIR}/",
        f"WORKDIR {CODE_DIR}",
        "",
        f"USER {UID}:{UID}",
        f"EXPOSE {port}",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        f'  CMD ["python", "-c", {json.dumps(probe)}]',
        f"CMD {json.dumps(cmd)}",
        "",
    ]
    return "\n".join(lines)


DOCKERIGNORE = """\
# What the image does not need from this directory.
Dockerfile
.dockerignore
k8s.yaml
README.md
**/__pycache__
**/*.pyc
**/.git
"""


def manifests(run: Run, label: str, port: int, replicas: int, model_bytes: int,
              model_path: str = "") -> list[dict[str, Any]]:
    """The Deployment and the Service, as the dicts k8s.yaml holds."""
    labels = {"app.kubernetes.io/name": label, "app.kubernetes.io/managed-by": "runyard"}
    selector = {"app.kubernetes.io/name": label}
    # Where the model came from, for whoever finds the pods: `runyard show RUN`, `runyard cp RUN:PATH`.
    annotations = {"runyard.dev/run": str(run.number), "runyard.dev/run-id": run.id}
    if model_path:
        annotations["runyard.dev/model"] = model_path
    # The model is in memory once loaded, and often once more while it loads.
    memory_mib = max(512, -(-2 * model_bytes // (1 << 20)))
    resources: dict[str, Any] = {"requests": {"cpu": "500m", "memory": f"{memory_mib}Mi"}}
    gpus = int((run.resources or {}).get("gpus") or 0)
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": gpus}

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 5,
                "failureThreshold": failures}

    container = {
        "name": "server",
        "image": f"{label}:{run.number}",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": resources,
        # Until the handler's load() has returned, only the startup probe runs: a slow load is not
        # killed by the liveness probe, and a load that never ends is restarted after STARTUP_SECONDS.
        "startupProbe": probe("/ready", 5, STARTUP_SECONDS // 5),
        # Out of the Service while not ready (never restarted for it) ...
        "readinessProbe": probe("/ready", 5, 3),
        # ... restarted only when the process stops answering.
        "livenessProbe": probe("/health", 10, 3),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": label, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID},
                         "containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": label, "labels": labels, "annotations": annotations},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    return [deployment, service]


def yaml_documents(documents: Sequence[dict[str, Any]]) -> str:
    return "---\n".join(_yaml(doc, 0) for doc in documents)


def _yaml(value: Any, indent: int) -> str:
    """Block-style YAML of dicts, lists and scalars. Every scalar is written as JSON (a subset of
    YAML), so no string is misread as a number, a boolean or a null."""
    pad = " " * indent
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:\n{_yaml(item, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {json.dumps(item)}\n")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                body = _yaml(item, indent + 2)
                out.append(f"{pad}- {body[indent + 2:]}")
            else:
                out.append(f"{pad}- {json.dumps(item)}\n")
    return "".join(out)


def readme(run: Run, label: str, port: int, model_path: str, cls: str) -> str:
    image = f"{label}:{run.number}"
    return f"""\
# {label}: the model server of run {run.number}

Made by `runyard serve {run.number}:{model_path} --export k8s`: the handler `{cls}` from the run's
code (`code/`), serving the run's `{model_path}` (`model/`), with the run's packages
(`requirements.txt`).

## Build and push

The image name in `k8s.yaml` is `{image}`, a placeholder: tag the image for your registry and
change `image:` in `k8s.yaml` to match.

    docker build -t registry.example.com/{image} .
    docker push registry.example.com/{image}

## Deploy

    kubectl apply -f k8s.yaml
    kubectl rollout status deployment/{label}

The pod is ready once the model has loaded (`GET /ready`); it is restarted only when the server
stops answering (`GET /health`).

## Try it

    kubectl port-forward service/{label} {port}:80
    curl http://127.0.0.1:{port}/health
    curl http://127.0.0.1:{port}/openapi.json
    curl -X POST http://127.0.0.1:{port}/predict -H 'content-type: application/json' -d '{{...}}'

The demo page is at http://127.0.0.1:{port}/. The Service is ClusterIP: inside the cluster the
server is `http://{label}/`; add an Ingress (and authentication) to reach it from outside.
"""
