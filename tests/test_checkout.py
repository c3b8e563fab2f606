"""Child processes started by tests run this checkout's code, not another tree's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_a_child_process_imports_the_checkout(tmp_path: Path) -> None:
    # cwd elsewhere, as worker/beat/CLI children run: only PYTHONPATH can put the checkout first.
    out = subprocess.run(
        [sys.executable, "-c", "import dataforge, refactor_tool, compat, migrations as m; "
         "print(dataforge.__file__); print(refactor_tool.__file__); print(compat.__file__); print(m.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    assert [Path(p).resolve().parent.parent for p in out] == [REPO_ROOT] * 4, out
