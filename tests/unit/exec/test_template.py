"""Substituting params into a command: what is a placeholder, what stays as typed."""

from __future__ import annotations

import shlex

import pytest

from runyard.errors import InvalidArgument
from runyard.exec.template import substitute

PARAMS = {"lr": "0.1", "name": "a b; rm -rf ~", "epochs": "3"}


def test_argv_entries_get_values_as_they_are_and_params_one_entry_each_sorted() -> None:
    assert substitute(["python", "t.py", "--lr", "{lr}", "--name={name}", "{params}"], False, PARAMS) == [
        "python", "t.py", "--lr", "0.1", "--name=a b; rm -rf ~", "--epochs=3", "--lr=0.1", "--name=a b; rm -rf ~"]


def test_braces_that_are_no_placeholder_stay_as_typed() -> None:
    typed = ["sh", "-c", "echo ${HOME} {1..3} {} { lr } {'a': 1} {0}", "{{lr}}", "}}{{", "--lr={lr}"]
    assert substitute(typed, False, PARAMS) == ["sh", "-c", "echo ${HOME} {1..3} {} { lr } {'a': 1} {0}", "{lr}",
                                                "}{", "--lr=0.1"]  # {{ and }} escape braces in a template
    assert substitute(["python", "t.py"], False, {}) == ["python", "t.py"]


def test_a_shell_line_gets_each_value_as_one_shell_word() -> None:
    [line] = substitute(["python t.py --lr {lr} --name {name} {params} | tee ${LOG}"], True, PARAMS)
    assert line == ("python t.py --lr 0.1 --name 'a b; rm -rf ~' --epochs=3 --lr=0.1 '--name=a b; rm -rf ~' "
                    "| tee ${LOG}")
    assert shlex.split(line)[5] == "a b; rm -rf ~"


def test_a_placeholder_naming_no_param_is_refused_naming_it_and_the_params() -> None:
    with pytest.raises(InvalidArgument, match=r"refers to \{momentum\}, which is no param; params given: "
                                              r"epochs, lr, name"):
        substitute(["python", "t.py", "--m", "{momentum}"], False, PARAMS)
    with pytest.raises(InvalidArgument, match=r"must be an entry of its own"):
        substitute(["python", "t.py", "--all={params}"], False, PARAMS)


def test_a_command_without_placeholders_runs_exactly_as_typed() -> None:
    for argv in (["python", "t.py", "--cfg", '{"a": {"b": 1}}'], ["jq", "{{x}}"], ["python", "-c", "print(f'{{x}}')"]):
        assert substitute(argv, False, {}) == argv
        assert substitute([" ".join(argv)], True, {"lr": "0.1"}) == [" ".join(argv)]


@pytest.mark.parametrize("line", ['python t.py --name "{name}"', "python t.py --name '{name}'",
                                  'python t.py --name "x {name} y"'])
def test_a_placeholder_inside_quotes_of_a_shell_line_is_refused(line: str) -> None:
    # In "...", the value's own quotes are literal: $(id) would run.
    with pytest.raises(InvalidArgument, match="inside quotes"):
        substitute([line], True, {"name": "$(id)"})
    assert substitute(['python t.py --name {name} "quoted text"'], True, {"name": "$(id)"}) == [
        "python t.py --name '$(id)' \"quoted text\""]
