"""What a conversion produces: the tasks package and the two imports every task needs.

Frozen and picklable: the same object is handed to every worker of the ``--jobs N`` pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refactor_tool.errors import RefactorError

__all__ = ["DEFAULT_BASE_IMPORT", "DEFAULT_CELERY_APP_IMPORT", "ConvertOptions", "ImportTarget", "MAP_FILE_NAME"]

#: Written in the converted backend dir; read by the data migration and the compat shim.
MAP_FILE_NAME = "dataforge-handler-map.json"


@dataclass(frozen=True)
class ImportTarget:
    """``module:attribute`` of something the generated code imports."""

    module: str
    attr: str

    @classmethod
    def parse(cls, spec: str) -> ImportTarget:
        """Accept ``pkg.mod:attr`` (canonical) or ``pkg.mod.attr`` (last dot splits)."""
        text = spec.strip()
        if ":" in text:
            module, _, attr = text.partition(":")
        else:
            module, _, attr = text.rpartition(".")
        parts = module.split(".") if module else []
        if not parts or not attr.isidentifier() or not all(p.isidentifier() for p in parts):
            raise RefactorError(f"import target {spec!r}: expected 'package.module:attribute'")
        return cls(module, attr)

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


DEFAULT_CELERY_APP_IMPORT = ImportTarget("dataforge.celery_app", "celery_app")
DEFAULT_BASE_IMPORT = ImportTarget("dataforge.tasks.base", "DataForgeTask")


def _check_package(name: str, what: str) -> str:
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise RefactorError(f"{what} {name!r}: expected a dotted Python package name such as 'app.tasks'")
    return name


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that shapes the output. Defaults produce code that runs on this project's runtime."""

    tasks_package: str = "app.tasks"
    celery_app_import: ImportTarget = field(default=DEFAULT_CELERY_APP_IMPORT)
    base_import: ImportTarget = field(default=DEFAULT_BASE_IMPORT)
    #: The legacy scripts package (a top-level directory of the backend).
    scripts_package: str = "scripts"
    keep_scripts: bool = False
    #: Also apply the design's file change list to the legacy ``app/`` (refactor_tool.app_files).
    app_files: bool = True

    def __post_init__(self) -> None:
        _check_package(self.tasks_package, "tasks package")
        if not self.scripts_package.isidentifier():
            raise RefactorError(f"scripts package {self.scripts_package!r}: expected a top-level package name")

    @property
    def tasks_dir_parts(self) -> tuple[str, ...]:
        """``app.tasks`` -> ``("app", "tasks")``: where converted modules live, relative to the backend."""
        return tuple(self.tasks_package.split("."))
