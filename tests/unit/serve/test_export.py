"""The pure half of serve/export.py: names, requirements, the Dockerfile and the manifests made from a
run record (the flow test, tests/flow/test_k8s_export.py, exports real runs)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from runyard.errors import InvalidArgument, NotFound
from runyard.serve.export import (
    RunyardInstall,
    dns_label,
    dockerfile,
    manifests,
    python_version,
    requirements,
    yaml_documents,
)
from runyard.store.api import Run
from runyard.types import RunStatus


def run_with(**fields: Any) -> Run:
    base: dict[str, Any] = {
        "number": 62, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "project": "p", "name": None,
        "status": RunStatus.FINISHED, "status_message": None, "command": ["python", "train.py"],
        "created_at": 0.0, "queued_at": None, "started_at": None, "ended_at": None, "heartbeat_at": None,
        "exit_code": 0, "executor": "local", "host": None, "resources": {"gpus": 0}, "priority": 0,
        "snapshot_id": "sha256:" + "0" * 64, "git_commit": None, "git_branch": None, "git_diff_ref": None,
        "parent": None, "notes": "", "config": {}, "summary": {}, "environment": {}, "labels": (),
    }
    return Run(**{**base, **fields})


@pytest.mark.parametrize(("name", "label"), [
    ("digits", "digits"), ("Digits CNN", "digits-cnn"), ("my_model.v2", "my-model-v2"),
    ("62", "m-62"), ("--a--b--", "a-b"), ("x" * 80, "x" * 63), ("résumé", "r-sum"),
])
def test_names_become_dns_labels(name: str, label: str) -> None:
    assert dns_label(name) == label


def test_a_name_without_a_letter_or_digit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="at least one letter or digit"):
        dns_label("___")


def test_the_yaml_reads_back_as_written_whatever_the_strings_look_like() -> None:
    doc = {"a": "yes", "b": "1", "c": "null", "d": "x: y", "e": ["- z", {"f": "#g", "h": []}], "i": {},
           "j": [[1, 2], ["3"]], "k": True, "l": 0.5, "m": "line\nbreak"}
    assert list(yaml.safe_load_all(yaml_documents([doc, {"n": 1}]))) == [doc, {"n": 1}]


def test_requirements_fall_back_to_what_the_run_was_launched_with() -> None:
    run = run_with(launch={"pip": ["scikit-learn==1.5.0", "runyard"],
                           "requirements": "# torch\ntorch>=2 \\\n  ; python_version > '3'  # cpu\npillow\n"})
    text = requirements(run)
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == ["scikit-learn==1.5.0", "torch>=2   ; python_version > '3'", "pillow"]
    assert "recorded no package list" in text


def test_recorded_packages_are_pinned_runyard_and_pip_left_out_and_local_versions_flagged() -> None:
    run = run_with(environment={"python": "3.12.4", "packages": [
        "numpy==2.1.0", "pip==24.0", "runyard==0.1.0", "torch==2.3.0+cu121", "Pillow==10.4.0"]})
    text = requirements(run)
    assert [ln for ln in text.splitlines() if not ln.startswith("#") and ln] == [
        "numpy==2.1.0", "Pillow==10.4.0", "torch==2.3.0+cu121"]
    assert "torch==2.3.0+cu121 carry a local version" in text
    assert python_version(run) == "3.12"


def test_without_a_recorded_python_the_image_uses_this_ones() -> None:
    import sys

    assert python_version(run_with()) == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_without_a_wheel_runyard_is_a_pinned_requirement() -> None:
    text = dockerfile(run_with(), "3.12", RunyardInstall("runyard[serve]==0.1.0", None), "serve.py:Model", 8080)
    assert 'RUN pip install "runyard[serve]==0.1.0"' in text
    assert "wheels" not in text


def test_a_gpu_run_asks_for_its_gpus_and_a_big_model_for_memory() -> None:
    run = run_with(resources={"gpus": 2})
    deployment, service = manifests(run, "big", 8080, 0, 3 << 30)
    for doc in (deployment, service):
        kubernetes_validate.validate(doc, "1.31", strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert container["resources"]["requests"]["memory"] == f"{6 << 10}Mi"
    assert deployment["spec"]["replicas"] == 0


def test_without_a_name_the_runs_name_or_project_names_the_deployment(tmp_path: Any) -> None:
    from runyard.serve.export import export_k8s

    class NoArtifacts:
        """Just enough of the read API to reach the name, and stop at the model."""

        class store:
            @staticmethod
            def list_artifacts(number: int) -> list[Any]:
                return []

        @staticmethod
        def sync(runs: list[str]) -> None:
            pass

    # The name is checked before the run's artifacts are read: a bad default fails first.
    with pytest.raises(InvalidArgument, match="name '___'"):
        export_k8s(NoArtifacts(), run_with(name="___"), "m", "s.py:M", None, tmp_path / "out")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no artifact m"):
        export_k8s(NoArtifacts(), run_with(project="gan"), "m", "s.py:M", None, tmp_path / "out")  # type: ignore[arg-type]


@pytest.mark.parametrize("source", [
    "class Model:\n    pass\n", "from .impl import Impl as Model\n", "import Model\n", "Model = make()\n",
    "Model: type = object\n",
])
def test_a_handler_class_may_be_defined_assigned_or_imported(source: str) -> None:
    from runyard.serve.export import _check_defines

    _check_defines(source.encode(), "serve.py", "Model", 1)


def test_a_handler_file_without_the_class_or_that_does_not_parse_is_refused() -> None:
    from runyard.serve.export import _check_defines

    with pytest.raises(NotFound, match=r"serve.py in run 1's code defines no Model \(its classes: Other\)"):
        _check_defines(b"class Other:\n    pass\ndef Model(): pass\n", "serve.py", "Model", 1)
    with pytest.raises(InvalidArgument, match="does not parse"):
        _check_defines(b"class (:\n", "serve.py", "Model", 1)


def test_a_runyard_installed_from_a_wheel_file_is_copied_into_the_context(tmp_path: Any) -> None:
    from runyard.serve.export import _build_wheel

    wheel = tmp_path / "runyard-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK not really")
    (tmp_path / "ctx").mkdir()
    _build_wheel(wheel, tmp_path / "ctx" / "wheels")
    assert (tmp_path / "ctx" / "wheels" / wheel.name).read_bytes() == b"PK not really"
