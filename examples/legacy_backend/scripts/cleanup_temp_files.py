"""Remove leftover *.tmp files from the data directory."""

from scripts._common import DATA_DIR


def run():
    removed = 0
    for path in sorted(DATA_DIR.rglob("*.tmp")):
        path.unlink()
        removed += 1
    return {"removed": removed}
