"""Storing a run's outputs/: whole files only, one copy each, content already stored not written again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import BinaryIO

from runyard.exec.outputs import Outputs, written_by
from runyard.store.artifacts import Blob
from runyard.store.disk_artifacts import DiskArtifacts


class CountingStore(DiskArtifacts):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_stream(self, src: BinaryIO) -> Blob:  # what every store write goes through
        self.writes.append(getattr(src, "name", "?"))
        return super().put_stream(src)


def outputs_in(tmp_path: Path, writing: set[str] | None = None
               ) -> tuple[Outputs, CountingStore, list[tuple], list[str]]:
    store = CountingStore(tmp_path / "artifacts")
    store.ensure()
    recorded: list[tuple] = []
    said: list[str] = []
    (tmp_path / "work" / "outputs").mkdir(parents=True)
    outputs = Outputs(tmp_path / "work", store, lambda *r: recorded.append(r), said.append, lambda: writing or set())
    return outputs, store, recorded, said


def settled(path: Path) -> None:
    old = time.time() - 60
    os.utime(path, (old, old))


def test_a_pass_stores_settled_files_and_leaves_those_being_written(tmp_path: Path) -> None:
    held = tmp_path / "work" / "outputs" / "ckpt" / "step-2.pt"
    outputs, store, recorded, said = outputs_in(tmp_path, {os.path.realpath(held)})
    directory = outputs.directory / "outputs"
    (directory / "ckpt").mkdir()
    (directory / "ckpt" / "step-1.pt").write_bytes(b"one")
    held.write_bytes(b"tw")
    settled(directory / "ckpt" / "step-1.pt")
    settled(held)
    (directory / "metrics.csv").write_text("fresh")  # changed a moment ago: it may still grow
    assert outputs.upload(final=False) == 1
    assert [r[0] for r in recorded] == ["outputs/ckpt/step-1.pt"]
    assert said == ["uploaded 1 output file(s) (3 bytes)"]
    assert outputs.upload(final=False) == 0  # unchanged: not read again
    held.write_bytes(b"two")
    assert outputs.finish() == 2  # the command ended: everything that changed is stored
    stored = {path: store.read_bytes(f"sha256:{sha}") for path, _, sha, _ in recorded}
    assert stored == {"outputs/ckpt/step-1.pt": b"one", "outputs/ckpt/step-2.pt": b"two",
                      "outputs/metrics.csv": b"fresh"}


def test_content_the_store_holds_is_not_written_again(tmp_path: Path) -> None:
    outputs, store, recorded, _ = outputs_in(tmp_path)
    for name in ("best.pt", "last.pt"):
        (outputs.directory / "outputs" / name).write_bytes(b"same weights")
    outputs.finish()
    assert len(recorded) == 2 and recorded[0][2] == recorded[1][2] and len(store.writes) == 1


def test_a_file_removed_or_unnamable_is_skipped_with_a_word(tmp_path: Path) -> None:
    outputs, _, recorded, said = outputs_in(tmp_path)
    (outputs.directory / "outputs" / "bad\nname").write_text("x")
    outputs.finish()
    outputs.upload(final=True)
    assert recorded == [] and len(said) == 1 and "not storing 'outputs/bad\\nname'" in said[0]


def test_written_by_names_files_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "being-written"
    with path.open("w") as f:
        f.write("x")
        assert os.path.realpath(path) in written_by(os.getpid())
    read = tmp_path / "only-read"
    read.write_text("x")
    with read.open() as f:
        assert os.path.realpath(read) not in written_by(os.getpid())


def test_a_pass_keeps_what_the_run_wrote_and_not_code_mounts_caches_ignored_or_big_files(tmp_path: Path) -> None:
    outputs, store, recorded, said = outputs_in(tmp_path)
    outputs.limit = 10
    work = outputs.directory
    code = {"train.py": b"print(1)", "data.csv": b"a,b", ".runyardignore": b"*.tmp\n"}
    for name, data in code.items():
        (work / name).write_bytes(data)
    outputs.snapshot({name: hashlib.sha256(data).hexdigest() for name, data in code.items()})
    (work / "runyard-params.json").write_text("{}")
    (work / "data.csv").write_bytes(b"a,b\n1,2")  # changed by the run
    (work / "traindata.pt").write_bytes(b"tensors")
    for cache in ("__pycache__/a.pyc", ".ipynb_checkpoints/n.ipynb", "venv/lib/x.py", "mounted/in.csv", "x.tmp"):
        (work / cache).parent.mkdir(parents=True, exist_ok=True)
        (work / cache).write_bytes(b"no")
    outputs.place("mounted")
    (work / "big.bin").write_bytes(b"0" * 11)
    (work / "outputs" / "big.tmp").write_bytes(b"0" * 11)  # outputs/ is kept whole
    for name, mode in (("traindata.pt", 0o750), ("data.csv", 0o644), ("outputs/big.tmp", 0o644)):
        (work / name).chmod(mode)
    outputs.finish()
    assert {r[0]: r[3] for r in recorded} == {"data.csv": 0o644, "traindata.pt": 0o750, "outputs/big.tmp": 0o644}
    assert any("not keeping big.bin as an output: 11 bytes is over the limit of 10 bytes" in s for s in said), said
    assert store.read_bytes(f"sha256:{hashlib.sha256(b'tensors').hexdigest()}") == b"tensors"
