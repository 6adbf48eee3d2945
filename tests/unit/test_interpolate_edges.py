"""Compose interpolation at its edges: where an error names, strictness through nested
defaults, a `$` at the end, names with digits and underscores, every error message exactly."""

from __future__ import annotations

import pytest

from lab.model import TopologyError
from lab.model.interpolate import interpolate, interpolate_tree

ENV = {"A": "a", "EMPTY": "", "A_1": "one", "B": "b"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cost $", "cost $"),  # a last `$` stays
        ("$", "$"),
        ("x${A_1}y", "xoney"),
        ("x$A_1y", "x"),  # the name runs to the last letter, digit or underscore
        ("$A_1", "one"),
        ("$_UNSET.", "."),
        ("${A}${B}", "ab"),
        ("${UNSET-${A}${B}}", "ab"),
        ("${A+${B}}", "b"),
        ("${UNSET+${B}}", ""),
        ("${EMPTY+set}", "set"),
        ("${EMPTY:+set}", ""),
        ("${UNSET-{x}}", "{x}"),
        ("pre${A}post$B", "preapostb"),
    ],
)
def test_interpolate_edges(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET:?}", "f.yml: required variable UNSET is unset: must be set"),
        ("${UNSET?no ${A}}", "f.yml: required variable UNSET is unset: no a"),
        ("${UNSET:-${INNER:?gone}}", "f.yml: required variable INNER is unset: gone"),
        ("${A:+${INNER:?gone}}", "f.yml: required variable INNER is unset: gone"),
        ("${", "f.yml: unclosed '${' in '${'"),
        ("${A:-${B}", "f.yml: unclosed '${' in '${A:-${B}'"),
        ("$1", "f.yml: invalid interpolation in '$1' (write $$ for $)"),
        ("${1A}", "f.yml: invalid variable name in '${1A}'"),
        ("${}", "f.yml: invalid variable name in '${}'"),
        ("${A%x}", "f.yml: invalid interpolation '${A%x}'"),
        ("${UNSET:-$1}", "f.yml: invalid interpolation in '$1' (write $$ for $)"),
        ("${A:+${1}}", "f.yml: invalid variable name in '${1}'"),
        ("${UNSET:?$1}", "f.yml: invalid interpolation in '$1' (write $$ for $)"),
    ],
)
def test_errors_name_where_and_say_what(text: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        interpolate(text, ENV, strict=True, where="f.yml")
    assert str(err.value) == message


def test_not_strict_an_unset_required_variable_is_empty() -> None:
    assert interpolate("${UNSET:?gone}x", ENV) == "x"
    assert interpolate("${UNSET:-${INNER:?gone}}", ENV) == ""


def test_the_default_place_is_the_compose_file() -> None:
    with pytest.raises(TopologyError, match=r"^compose file: unclosed"):
        interpolate("${", ENV)


def test_trees_pass_strictness_and_place_down() -> None:
    tree = {"a": ["$A", {"b": "${B}"}], "n": 5, "none": None}
    assert interpolate_tree(tree, ENV, False, "f.yml") == {
        "a": ["a", {"b": "b"}],
        "n": 5,
        "none": None,
    }
    for bad in ({"k": ["${X:?}"]}, ["${X:?}"], "${X:?}"):
        with pytest.raises(TopologyError, match=r"^t\.yml: required variable X is unset"):
            interpolate_tree(bad, ENV, True, "t.yml")
