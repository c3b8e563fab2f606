"""dev/mutants.py stays applicable: every mutant's snippet is in its file exactly once, its
tests exist, and the guarantee it breaks names a doc that exists. (Whether the tests kill
the mutants is what running the script tells; it takes minutes and real services.)"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dataforge_dev_mutants", REPO_ROOT / "dev" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


MUTANTS = _load().MUTANTS


def test_names_are_unique() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) and names


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_to_the_code_as_it_is(mutant: Any) -> None:
    path = REPO_ROOT / mutant.path
    count = path.read_text(encoding="utf-8").count(mutant.before)
    assert count == 1, f"{mutant.name}: snippet found {count} times in {path}: update the mutant"
    assert mutant.before != mutant.after
    for test in mutant.tests:
        assert (REPO_ROOT / test.split("::")[0]).exists(), f"{mutant.name}: no test {test}"
    doc = mutant.guarantee.split(":")[0]
    assert (REPO_ROOT / doc).is_file(), f"{mutant.name}: guarantee cites {doc}, which does not exist"
