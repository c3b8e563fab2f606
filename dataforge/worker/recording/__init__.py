"""Execution recording: one ``task_executions`` row per attempt, and the schedule's outcome counters.

Only tasks that opt in (``dataforge_record = True``, set by
:class:`~dataforge.worker.task.DataForgeTask`) are recorded; Celery's internal tasks and plain
tasks are not. :mod:`dataforge.celery_signals` connects the receivers of :mod:`.handlers`.

* :mod:`.records`: what is written (row images of attempts; the parent's closes), pure values;
* :mod:`.statements`: the SQL, built once per process with bind parameters;
* :mod:`.counters`: what a batch of written rows adds to each schedule's counters;
* :mod:`.connections`: kept autocommit PostgreSQL connections that replace themselves after a
  restart, bounded by connect and statement timeouts;
* :mod:`.writer`: the per-process writer thread: batches, outages, a bounded queue, exit;
* :mod:`.recorder`: the run's side (the duplicate check, queueing records) on ``runtime.recorder``;
* :mod:`.runlog`: the one structured log line per run;
* :mod:`.handlers`: the signal receivers that turn Celery's events into records.

What a run costs and when its record is written:

* ``task_prerun``: ONE read (has this attempt ``(celery_task_id, attempt)`` already finished?
  An outcome this process queued counts too). A finished attempt (``success``, ``failure``,
  ``retry``, ``skipped``, ``expired``) marks the run's state a duplicate
  (:mod:`dataforge.worker.run_state`): the task ends that delivery without running it and
  nothing is recorded for it. Otherwise the attempt's ``running`` image is built; it is
  queued when the job is called (``DataForgeTask.__call__``), so a delivery that
  ``before_start`` ends unrun never writes it over the row of the delivery that owns it.
* ``task_success`` / ``task_failure`` / ``task_retry`` / ``task_postrun`` (skipped runs): the
  outcome image is queued; it replaces the queued ``running`` image, so a short run is
  written once, finished.
* The writer writes each batch (50 ms after its first record) as ONE statement on
  PostgreSQL: an upsert that only takes over a ``running`` or ``lost`` row and moves the
  schedule's counters for the rows really written, so a duplicate event never counts twice.

Parent-side events (the worker's main process, where no postrun follows): ``task_failure``
with ``WorkerLostError`` (child killed: SIGKILL, OOM) records the attempt ``lost`` (inserting
its row if the child had not written it); a hard time limit (``TimeLimitExceeded``) or a
terminating ``revoke`` record ``failure``; an expired message (``task_revoked`` with
``expired=True``) records ``expired``. Each frees the run lock with ``release_owned_by(key,
task_id)`` where a run held one: only if a token of that task id holds it.

Who writes which column of ``scheduled_tasks`` (so the worker never races the scheduler):
beat owns ``next_run_at``, ``last_run_at``, ``run_count`` and ``missed_count``. The worker
(and the reaper in the leading beat) owns the outcome counters (``success_count``,
``failure_count``, ``skipped_count``, ``expired_count``, ``lost_count``), ``last_status`` and
``last_error``: every run sent ends in exactly one of the counters, moved once.

A database outage never fails a task: the read fails open, records wait in the writer's
bounded queue, and everything is counted (:class:`~.writer.RecorderStats`). docs/runtime.md,
"Durability of the record", says what a crash can lose.
"""
