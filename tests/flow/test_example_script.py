"""The README's ordinary script (examples/digits.py) works as documented: argparse flags filled in
from --param placeholders and again by a rerun, files it writes beside itself and the figure of its
plt.show() kept and copied back, and the numbers of its JSON lines recorded though they carry a string."""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

from tests.flow.test_execution import TERMINAL, api_of, cli, launch, log_of, wait_status
from tests.flow.test_execution import env as env

ROOT = Path(__file__).parents[2]


def test_the_digits_example_runs_with_placeholders_reruns_and_brings_back_its_files(
        tmp_path: Path, env: dict[str, str]) -> None:
    project = tmp_path / "digits"
    (project / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "digits.py", project / "examples" / "digits.py")
    first = launch(env, project, "--param", "lr=0.01", "--param", "epochs=4", "--",
                   sys.executable, "examples/digits.py", "--lr", "{lr}", "--epochs", "{epochs}")
    assert wait_status(env, project, first, TERMINAL, timeout=120) == "finished", log_of(env, project, first)
    second = int(cli(env, project, "rerun", str(first), "--param", "lr=0.1").stdout.split()[1])
    assert wait_status(env, project, second, TERMINAL, timeout=120) == "finished", log_of(env, project, second)

    api = api_of(env, project)
    try:
        runs = {n: api.run(n) for n in (first, second)}
        for n, run in runs.items():
            assert run.command[-4:] == ["--lr", {first: "0.01", second: "0.1"}[n], "--epochs", "4"]
            assert run.config == {"lr": {first: 0.01, second: 0.1}[n], "epochs": 4}
            # `{"step": 3, "phase": "eval", "train/acc": ..., "val/acc": ...}`: the numbers are metrics
            assert 0.5 < run.summary["val/acc"] <= 1.0 and "train/acc" in run.summary
            assert len(run.history("val/acc")) == 4
            outputs = {a.path for a in run.artifacts()}
            assert {"model.pkl", "predictions.csv", "figures/figure-001.png"} <= outputs, outputs
        assert any("'phase'" in text and "not recorded as a metric" in text for _, text in log_of(env, project, first))
    finally:
        api.close()
    assert runs[second].parent == first

    cli(env, project, "cp", f"{second}:model.pkl", str(tmp_path / "model.pkl"))
    cli(env, project, "cp", f"{second}:figures/", str(tmp_path / "figures"))
    model = pickle.loads((tmp_path / "model.pkl").read_bytes())
    assert model.eta0 == 0.1  # the rerun's flag reached argparse
    assert (tmp_path / "figures" / "figure-001.png").read_bytes().startswith(b"\x89PNG")
    assert not (project / "model.pkl").exists()  # the run worked in its own directory
