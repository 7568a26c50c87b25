"""The key of a --pip environment: one environment per set of requirements, however it was written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runyard.exec.venvs import env_key, layer_line, requirement_set


def test_the_same_requirements_written_otherwise_make_the_same_key() -> None:
    python = "/usr/bin/python3"
    key = env_key(["Torch>=2.1,<3", "scikit_image"], None, python)
    assert env_key([], "# for the model\n\nscikit-image   # images\ntorch<3 , >=2.1\n", python) == key
    assert env_key(["scikit-image"], "torch>=2.1,<3\ntorch<3,>=2.1\n", python) == key  # deduplicated
    assert env_key(["a", "b"], None, python) == env_key([], "b\na\n", python)
    assert env_key(["torch>=2.2,<3", "scikit-image"], None, python) != key  # another version range
    assert env_key(["Torch>=2.1,<3", "scikit_image"], None, "/opt/conda/bin/python") != key  # another Python


def test_the_normalised_set_keeps_extras_urls_markers_and_lines_packaging_cannot_read() -> None:
    text = "Foo[B,a]==1 ; python_version > '3'\nbar @ https://example.org/bar-1.0.tar.gz\n-c constraints.txt\n"
    assert requirement_set(["foo[a,b]==1; python_version>'3'"], text) == [
        "-c constraints.txt", "bar @ https://example.org/bar-1.0.tar.gz", 'foo[a,b]==1 ; python_version > "3"']


def test_the_layer_reads_each_directory_s_own_pth_files_after_the_environment_s_path(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "src" / "editable_pkg").mkdir(parents=True)
    (base / "src" / "editable_pkg" / "__init__.py").write_text("")
    (base / "_editable_impl_pkg.pth").write_text(f"{base / 'src'}\n")  # as hatchling writes an editable install
    own = tmp_path / "own"
    own.mkdir()
    (own / "zz-runyard-layer.pth").write_text(layer_line([str(base)]))
    code = ("import site, sys; site.addsitedir(sys.argv[1]); import editable_pkg; "
            "print(sys.path.index(sys.argv[1]) < sys.path.index(sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(own), str(base)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
