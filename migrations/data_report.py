"""The data step's report: what the upgrade changes, flags or refuses, row by row, and every
active row it leaves unable to run, with all of that row's reasons.

One builder for ``dataforge db check`` and the data revision (0003), reading the same
classification (:data:`migrations.legacy_data.MIGRATION_ROWS`, SQL plus the Python step) and
adding what only Python can check: each row's schedule columns, by beat's own rules
(:mod:`migrations.schedule_checks`). An active row is listed under
:data:`migrations.report.STOPPED` when any of its reasons stops it (paused by the policy, no
task, kwargs without a JSON form, a schedule beat refuses); ``dataforge db check`` exits 1
then, so the preflight never says "fine" while a schedule would go silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from migrations.legacy_data import MIGRATION_ROWS, duplicate_executions_sql
from migrations.options import MigrationOptions
from migrations.report import REASONS, STOPPED, Item, MigrationReport
from migrations.schedule_checks import SCHEDULE_COLUMNS, schedule_problems
from migrations.sql import sql

__all__ = ["Classified", "add_schedule_checks", "collect_report"]

_CLIP = 80


@dataclass(frozen=True)
class Classified:
    """One classified row as the report needs it."""

    id: int
    name: str
    status: str
    task_name: str | None
    handler_path: str | None
    handler_kwargs: str
    mapped_task_name: str | None
    new_task_name: str
    kw_problem: str | None
    reasons: tuple[str, ...]

    def detail(self, code: str) -> str:
        if code == "kwargs_unconvertible":
            return f"handler_kwargs={_clip(self.handler_kwargs)!r}: {self.kw_problem or 'no JSON object form'}"
        if code.startswith("kwargs_"):
            return f"handler_kwargs={_clip(self.handler_kwargs)!r}"
        if code == "task_name_disagrees_with_handler_path":
            return f"task_name={self.task_name!r}, handler_path={self.handler_path!r} -> {self.mapped_task_name!r}"
        if code == "task_name_from_handler_path":
            return f"{self.handler_path!r} -> {self.new_task_name!r}"
        return f"status={self.status!r}, handler_path={self.handler_path!r}, task_name={self.task_name!r}"


@dataclass
class _RowReasons:
    """Every reason of one row, collected from the classification and the schedule checks."""

    name: str
    status: str
    details: dict[str, str] = field(default_factory=dict)


def _clip(value: str, width: int = _CLIP) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."


def collect_report(
    connection: Connection,
    dialect: str,
    options: MigrationOptions,
    *,
    source: str = MIGRATION_ROWS,
    include_executions: bool = True,
    sample: int = 1000,
) -> MigrationReport:
    """The report of the data step over ``source`` (the classification table the caller
    staged, :func:`migrations.data_step.stage`). Read-only."""
    report = MigrationReport(title="DataForge data migration report (scheduled_tasks, task_executions)")
    if options.map_source:
        report.notes.append(f"handler map: {options.map_source}")
    else:
        report.notes.append("no handler map: task names follow the rule scripts:<m> -> dataforge.<m>")
    report.notes.append(f"on_unmappable={options.on_unmappable}; scripts package {options.scripts_package!r}")
    by_row: dict[int, _RowReasons] = {}
    rows = connection.execute(
        sql(
            "SELECT id, name, status, task_name, handler_path, handler_kwargs, mapped_task_name, new_task_name, "
            f"kw_problem, reasons FROM {source} WHERE reasons <> '' ORDER BY id"
        )
    )
    for row in rows:
        item = Classified(
            id=row.id, name=row.name, status=row.status, task_name=row.task_name, handler_path=row.handler_path,
            handler_kwargs=row.handler_kwargs, mapped_task_name=row.mapped_task_name,
            new_task_name=row.new_task_name, kw_problem=row.kw_problem, reasons=tuple(row.reasons.split(",")),
        )  # fmt: skip
        found = by_row.setdefault(item.id, _RowReasons(item.name, item.status))
        for code in item.reasons:
            found.details[code] = item.detail(code)
    _schedule_reasons(connection, by_row)
    for row_id in sorted(by_row):
        found = by_row[row_id]
        for code, detail in found.details.items():
            report.add(code, Item(row_id, found.name, detail))
    _add_stopped(report, by_row)
    if include_executions:
        total = connection.execute(sql(f"SELECT count(*) FROM ({duplicate_executions_sql()}) AS d")).scalar_one()
        if total:
            found_rows = connection.execute(
                sql(
                    f"SELECT id, celery_task_id, attempt FROM ({duplicate_executions_sql()}) AS d "
                    f"ORDER BY id LIMIT {sample}"
                )
            )
            items = [Item(r.id, str(r.celery_task_id), f"attempt {r.attempt}") for r in found_rows]
            report.add_total("executions_attempts_numbered", int(total), items)
    return report


def add_schedule_checks(connection: Connection, report: MigrationReport) -> None:
    """Every schedule problem of every row, into ``report`` (a database whose data step ran)."""
    by_row: dict[int, _RowReasons] = {}
    _schedule_reasons(connection, by_row)
    for row_id in sorted(by_row):
        for code, detail in by_row[row_id].details.items():
            report.add(code, Item(row_id, by_row[row_id].name, detail))


def _schedule_reasons(connection: Connection, by_row: dict[int, _RowReasons]) -> None:
    rows = connection.execute(
        sql(f"SELECT id, name, status, {', '.join(SCHEDULE_COLUMNS)} FROM scheduled_tasks ORDER BY id")
    )
    for row in rows:
        for problem in schedule_problems(row, row.id):
            found = by_row.setdefault(row.id, _RowReasons(row.name, row.status))
            found.details.setdefault(problem.code, f"status={row.status!r}: {problem.detail}")


def _add_stopped(report: MigrationReport, by_row: dict[int, _RowReasons]) -> None:
    for row_id in sorted(by_row):
        found = by_row[row_id]
        stopping = [code for code in found.details if REASONS[code].stops]
        if found.status == "active" and stopping:
            detail = "; ".join(f"{code}: {found.details[code]}" for code in stopping)
            report.add(STOPPED, Item(row_id, found.name, detail, reasons=tuple(found.details)))
