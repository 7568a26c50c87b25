"""Control characters a run sends (in its name, labels, notes, keys, messages, log lines) are printed
as visible escapes by the plain CLI outputs, never acted on by the terminal; ``--json`` stays JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runyard.cli.printable import printable
from runyard.config import resolve
from runyard.store.api import AlertEvent, LogLine, NewRun, RunPatch
from runyard.store.home import open_store
from runyard.store.series import Points
from runyard.types import RunStatus

pytestmark = pytest.mark.timeout(120)

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
CSI = "\x9b2J"  # the same, as one C1 character
#: What no plain output may hold: C0 controls but tab and line feed, DEL, C1 controls.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "runyard.cli.main", *args], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"runyard {' '.join(args)} -> {out.returncode}\n{out.stderr}"
    return out.stdout + out.stderr


def _assert_inert(text: str, where: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in RAW.findall(text)})
    assert not found, f"{where} prints raw control characters {', '.join(found)}:\n{text!r}"


def test_control_characters_from_a_run_reach_the_terminal_as_visible_escapes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update({"RUNYARD_HOME": str(tmp_path / "home"), "RUNYARD_SYSTEM_INTERVAL": "0"})
    opened = open_store(resolve(environ=env, cwd=tmp_path))
    store = opened.store
    try:
        # What a run's records can carry, written as ingest writes it (names and labels the store
        # accepts: C1 controls and tabs pass their checks, so those are what such a run can send).
        bad = store.create_run(NewRun(
            project="p", name=f"evil{CSI}name", labels=["ok"], status=RunStatus.RUNNING,
            notes=f"first line{TITLE}\nsecond line{CLEAR}",
            config={f"lr{CLEAR}": 0.1, "optimizer": f"adam{TITLE}"}, command=["python", f"t{TITLE}.py"]))
        other = store.create_run(NewRun(project="p", name="plain", status=RunStatus.FINISHED,
                                        config={f"lr{CLEAR}": 0.2, "optimizer": "sgd"}))
        store.update_run(bad.number, RunPatch(status_message=f"going{TITLE}", summary={f"acc{CLEAR}": 0.9}))
        store.update_run(other.number, RunPatch(summary={f"acc{CLEAR}": 0.8}))
        steps = np.arange(3, dtype=np.int64)
        store.append_points(bad.number, {f"loss{CSI}": Points.of(steps, steps * 1.0, np.array([3.0, 2.0, 1.0]))})
        store.append_logs(bad.number, [LogLine(time.time(), f"epoch 1{TITLE}{CLEAR} done"),
                                       LogLine(time.time(), f"carriage\rreturn\x7f{CSI}", "stderr")])
        store.add_alert_event(AlertEvent(run=bad.number, kind="nan", message=f"loss{TITLE} is NaN", time=time.time()))
    finally:
        opened.close()

    outputs = {
        "show": _cli(env, tmp_path, "show", str(bad.number)),
        "ls": _cli(env, tmp_path, "ls"),
        "ls --columns": _cli(env, tmp_path, "ls", "--columns", f"config.lr{CLEAR},summary.acc{CLEAR},status_message"),
        "logs": _cli(env, tmp_path, "logs", str(bad.number)),
        "compare": _cli(env, tmp_path, "compare", str(bad.number), str(other.number), "--all"),
        "ps": _cli(env, tmp_path, "ps"),
        "inbox": _cli(env, tmp_path, "inbox"),
    }
    for command, text in outputs.items():
        _assert_inert(text, f"runyard {command}")
    # Still recognisable, written as escapes.
    assert "pwned" in outputs["show"] and r"first line\x1b]0;pwned\x07" in outputs["show"]
    assert r"evil\x9b2Jname" in outputs["show"] and r"going\x1b]0;pwned\x07" in outputs["show"]
    assert r"second line\x1b[2J" in outputs["show"]  # a note keeps its lines
    assert r"evil\x9b2Jname" in outputs["ls"] and r"evil\x9b2Jname" in outputs["ps"]
    assert r"loss\x9b2J=1" in outputs["ps"]
    assert r"epoch 1\x1b]0;pwned\x07\x1b[2J done" in outputs["logs"] and r"return\x7f\x9b2J" in outputs["logs"]
    assert r"lr\x1b[2J" in outputs["compare"] and r"acc\x1b[2J" in outputs["compare"]
    assert r"loss\x1b]0;pwned\x07 is NaN" in outputs["inbox"]
    # --json is exact JSON: the text comes back as it was stored.
    shown = json.loads(_cli(env, tmp_path, "show", str(bad.number), "--json"))
    assert shown["name"] == f"evil{CSI}name" and shown["notes"] == f"first line{TITLE}\nsecond line{CLEAR}"


@pytest.mark.parametrize(("given", "shown"), [
    ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
    ("a\x1b[2Jb", r"a\x1b[2Jb"),
    ("tab\there", "tab\there"),
    ("two\nlines", r"two\x0alines"),
    ("cr\rdel\x7fcsi\x9bnul\x00", r"cr\x0ddel\x7fcsi\x9bnul\x00"),
    ("right-to-left \u202eoverride", r"right-to-left \u202eoverride"),
    ("plain text, accents é and 日本", "plain text, accents é and 日本"),
])
def test_printable_escapes_control_characters_and_keeps_the_rest(given: str, shown: str) -> None:
    assert printable(given) == shown


def test_printable_keeps_line_breaks_where_a_text_has_lines() -> None:
    assert printable("one\x1b[2J\ntwo", lines=True) == "one\\x1b[2J\ntwo"
