"""The kwargs rule of REGISTERED_TASKS params: undeclared, exact, open-ended, and "takes nothing"."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge.catalog.params import (
    NO_PARAMS_KIND,
    ParamSpec,
    TaskParams,
    check_kwargs,
    no_params_item,
    var_keyword_item,
)
from dataforge.errors import ScheduleError

public_keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k != "scheduled_task_id")
kwargs_st = st.dictionaries(public_keys, st.integers(), max_size=5)
names = st.lists(public_keys, unique=True, max_size=4)


def _accepts(params: TaskParams, kwargs: dict[str, Any]) -> bool:
    try:
        check_kwargs("t", kwargs, params)
    except ScheduleError:
        return False
    return True


def test_the_three_shapes() -> None:
    assert TaskParams.from_registry([]) == TaskParams()  # a registry entry's "params": [] declares nothing
    assert TaskParams.from_registry([no_params_item()]) == TaskParams(declared=True)
    assert TaskParams.from_registry(["days", var_keyword_item()]) == TaskParams(
        (ParamSpec("days"),), declared=True, open_ended=True
    )
    assert no_params_item()["kind"] == NO_PARAMS_KIND


@given(kwargs_st)
def test_undeclared_params_accept_any_public_keys(kwargs: dict[str, Any]) -> None:
    for raw in ([], None, "days", [{"no": "name"}], [{"name": 3}], [7]):
        assert _accepts(TaskParams.from_registry(raw), kwargs)


@given(kwargs_st)
def test_a_task_that_takes_nothing_accepts_only_nothing(kwargs: dict[str, Any]) -> None:
    assert _accepts(TaskParams.from_registry([no_params_item()]), kwargs) == (not kwargs)


@given(names, kwargs_st, st.booleans())
def test_declared_params_accept_exactly_their_names_unless_open_ended(
    declared: list[str], kwargs: dict[str, Any], open_ended: bool
) -> None:
    raw: list[Any] = [{"name": n, "required": False} for n in declared]
    if open_ended:
        raw.append(var_keyword_item("extra"))
    # An empty list without the **kwargs item is "params": [], a registry entry's "undeclared".
    expected = open_ended or not declared or set(kwargs) <= set(declared)
    assert _accepts(TaskParams.from_registry(raw), kwargs) == expected


@given(names, kwargs_st)
def test_required_params_must_be_given(declared: list[str], kwargs: dict[str, Any]) -> None:
    raw = [{"name": n, "required": True} for n in declared] + [var_keyword_item()]
    assert _accepts(TaskParams.from_registry(raw), kwargs) == (set(declared) <= set(kwargs))


@pytest.mark.parametrize("key", ["scheduled_task_id", "_lock_key", "_x"])
@pytest.mark.parametrize("raw", [[], [no_params_item()], [var_keyword_item()]])
def test_reserved_keys_are_refused_whatever_the_task_declares(key: str, raw: list[Any]) -> None:
    with pytest.raises(ScheduleError, match="reserved"):
        check_kwargs("t", {key: 1}, TaskParams.from_registry(raw))


def test_a_task_that_takes_nothing_says_so() -> None:
    with pytest.raises(ScheduleError, match=r"takes no parameter\(s\) days; it declares: none"):
        check_kwargs("t", {"days": 1}, TaskParams.from_registry([no_params_item()]))
