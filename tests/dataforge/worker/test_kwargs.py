"""bind_kwargs: a job receives only the parameters its signature accepts (pure logic)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge.protocol import LEGACY_LOCK_KEY
from dataforge.worker.errors import JobArgumentError
from dataforge.worker.kwargs import bind_kwargs, with_legacy_lock_key

MESSAGE = {"days": 7, "scheduled_task_id": 12, "_lock_key": "dataforge:lock:x:12", "extra": "y"}


def no_params() -> None: ...


def named(days: int, extra: str = "") -> None: ...


def keyword_only(*, days: int = 1) -> None: ...


def var_kw(**kwargs: Any) -> None: ...


def named_and_var_kw(days: int, **kwargs: Any) -> None: ...


def declares_internal(days: int, _lock_key: str | None = None, scheduled_task_id: int | None = None) -> None: ...


def positional_only(days: int = 1, /, extra: str = "") -> None: ...


def test_named_parameters_only() -> None:
    assert bind_kwargs(named, MESSAGE).kwargs == {"days": 7, "extra": "y"}


def test_no_parameters_gets_nothing() -> None:
    assert bind_kwargs(no_params, MESSAGE).kwargs == {}


def test_keyword_only() -> None:
    assert bind_kwargs(keyword_only, MESSAGE).kwargs == {"days": 7}


def test_var_kwargs_gets_public_keys_and_schedule_id_but_never_internal_keys() -> None:
    assert bind_kwargs(var_kw, MESSAGE).kwargs == {"days": 7, "scheduled_task_id": 12, "extra": "y"}
    assert bind_kwargs(named_and_var_kw, MESSAGE).kwargs == {"days": 7, "scheduled_task_id": 12, "extra": "y"}


def test_internal_keys_reach_a_job_that_names_them() -> None:
    assert bind_kwargs(declares_internal, MESSAGE).kwargs == {
        "days": 7,
        "_lock_key": "dataforge:lock:x:12",
        "scheduled_task_id": 12,
    }


def test_the_legacy_lock_key_is_the_legacy_executors_value_and_a_message_key_wins() -> None:
    assert with_legacy_lock_key({"days": 1, "scheduled_task_id": 5}) == {
        "_lock_key": "scheduled_task:5", "days": 1, "scheduled_task_id": 5,
    }  # fmt: skip
    assert with_legacy_lock_key({"scheduled_task_id": 5, "_lock_key": "old"})["_lock_key"] == "old"
    assert with_legacy_lock_key({"days": 1}) == {"days": 1}  # no schedule: no legacy value


def test_passed_internal_keys_reach_var_kwargs_jobs_only() -> None:
    legacy = frozenset({LEGACY_LOCK_KEY})
    kwargs = {"days": 7, "_lock_key": "scheduled_task:5", "_other": 1}
    assert bind_kwargs(var_kw, kwargs).kwargs == {"days": 7}
    assert bind_kwargs(var_kw, kwargs, legacy).kwargs == {"days": 7, "_lock_key": "scheduled_task:5"}
    assert bind_kwargs(named, kwargs, legacy).kwargs == {"days": 7}  # the TypeError stays fixed
    assert bind_kwargs(dict, kwargs, legacy).kwargs == {"days": 7, "_lock_key": "scheduled_task:5"}


def test_positional_only_parameters_never_receive_keywords() -> None:
    assert bind_kwargs(positional_only, MESSAGE).kwargs == {"extra": "y"}


def test_dropped_keys_are_reported() -> None:
    assert bind_kwargs(named, MESSAGE).dropped == ("scheduled_task_id", "_lock_key")


def test_missing_required_parameter_names_the_job_and_the_fix() -> None:
    with pytest.raises(JobArgumentError) as info:
        bind_kwargs(named, {"extra": "y"})
    err = info.value
    assert isinstance(err, TypeError)  # what calling the job would have raised
    assert err.missing == ["days"]
    assert "test_kwargs.named" in str(err) and "handler_kwargs" in str(err)


def test_required_positional_only_parameter_can_never_be_bound() -> None:
    def job(a: int, /) -> None: ...

    with pytest.raises(JobArgumentError):
        bind_kwargs(job, {"a": 1})


def test_bound_methods_and_partials() -> None:
    class Job:
        def run(self, days: int = 0) -> None: ...

    assert bind_kwargs(Job().run, MESSAGE).kwargs == {"days": 7}
    assert bind_kwargs(functools.partial(named, extra="z"), MESSAGE).kwargs == {"days": 7, "extra": "y"}


def test_async_jobs_are_bound_the_same_way() -> None:
    async def run(days: int = 1) -> int:
        return days

    assert bind_kwargs(run, MESSAGE).kwargs == {"days": 7}


def test_callable_without_signature_gets_public_keys() -> None:
    # `dict` has no introspectable signature in CPython's builtins.
    bound = bind_kwargs(dict, {"a": 1, "_lock_key": "k"})
    assert bound.kwargs == {"a": 1} and bound.dropped == ("_lock_key",)


def _job(a: int = 0, b: str = "", *, c: float = 0.0) -> tuple[int, str, float]:
    return a, b, c


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "_x", "scheduled_task_id", "_lock_key"]), st.integers()))
def test_bound_kwargs_always_call_cleanly(kwargs: dict[str, int]) -> None:
    bound = bind_kwargs(_job, kwargs).kwargs
    assert set(bound) <= {"a", "b", "c"}
    assert all(bound[k] == kwargs[k] for k in bound)
    _job(**bound)  # never "unexpected keyword argument"
