"""Which Python script a command runs, read before it runs (a missing one is refused at submission)."""

from __future__ import annotations

import pytest

from runyard.exec.commands import script_of, words_of


@pytest.mark.parametrize(("argv", "script"), [
    (["python", "train.py", "--lr", "0.1"], "train.py"),
    (["python3", "-u", "./models/../train.py"], "train.py"),
    (["/usr/bin/python3.12", "-X", "dev", "-W", "ignore", "-B", "train.py"], "train.py"),
    (["python", "-Wignore", "-uB", "train.py"], "train.py"),
    (["python", "--", "train.py"], "train.py"),
    (["python", "-m", "torch.distributed.run", "train.py"], None),
    (["python", "-Bc", "print(1)"], None),
    (["python", "-c", "print(1)"], None),
    (["python", "-"], None),
    (["python"], None),
    (["torchrun", "train.py"], None),
    (["pythonw", "train.py"], None),
])
def test_the_script_of_a_python_command(argv: list[str], script: str | None) -> None:
    assert script_of(argv) == script


def test_only_a_shell_line_of_plain_words_is_read() -> None:
    assert words_of(["python 'my script.py' --epochs 3"], shell=True) == ["python", "my script.py", "--epochs", "3"]
    for line in ("cd models; python model_12.py", "python $SCRIPT", "python train.py > log", "LR=1 python t.py",
                 "python *.py", "python 'unclosed"):
        assert words_of([line], shell=True) is None, line
    assert words_of(["python", "x; y"], shell=False) == ["python", "x; y"]
