"""The worker side of the overlap policies, pure parts: reading the header, the wait's deadline.
(The policies themselves run against a real worker: tests/dataforge/scheduler/test_overlap_policies.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dataforge.protocol import OVERLAP_HEADER, OverlapPolicy
from dataforge.worker.overlap import _deadline, overlap_policy, waiting_key


@pytest.mark.parametrize(
    ("headers", "attribute", "expected"),
    [
        ({}, None, OverlapPolicy.SKIP),  # beat leaves the header out for skip
        ({OVERLAP_HEADER: "buffer_one"}, None, OverlapPolicy.BUFFER_ONE),
        ({OVERLAP_HEADER: "allow"}, None, OverlapPolicy.ALLOW),
        ({}, "cancel_previous", OverlapPolicy.CANCEL_PREVIOUS),  # Celery copies headers onto the request
        ({OVERLAP_HEADER: "ALLOW"}, None, OverlapPolicy.SKIP),  # not a policy: the safe side
        ({OVERLAP_HEADER: 3}, None, OverlapPolicy.SKIP),
        ({OVERLAP_HEADER: None}, None, OverlapPolicy.SKIP),
    ],
)
def test_the_policy_comes_from_the_header_and_anything_else_is_skip(
    headers: dict[str, object], attribute: str | None, expected: OverlapPolicy
) -> None:
    request = SimpleNamespace(headers=headers, **({OVERLAP_HEADER: attribute} if attribute else {}))
    assert overlap_policy(request) == expected


def test_a_wait_ends_before_the_runs_own_time_limit() -> None:
    def clock() -> float:
        return 100.0

    assert _deadline(SimpleNamespace(timelimit=(90, 60)), clock, None) == 159.0  # the soft limit first
    assert _deadline(SimpleNamespace(timelimit=(90, None)), clock, None) == 189.0
    assert _deadline(SimpleNamespace(timelimit=(None, None)), clock, None) is None  # no limit: until it ends
    assert _deadline(SimpleNamespace(), clock, 15.0) == 115.0
    assert _deadline(SimpleNamespace(timelimit=(90, 60)), clock, 15.0) == 115.0


def test_the_waiting_slot_is_a_lock_of_its_own_next_to_the_run_lock() -> None:
    assert waiting_key("dataforge:lock:x:7") == "dataforge:lock:x:7:waiting"
