"""Execution recording: one ``task_executions`` row per attempt, and the schedule's outcome counters.

Only tasks that opt in (``dataforge_record = True``, set by
:class:`~dataforge.worker.task.DataForgeTask`) are recorded; Celery's internal tasks and plain
tasks are not. :mod:`dataforge.celery_signals` connects the receivers of :mod:`.handlers`.

* :mod:`.statements`: the SQL, built once per process with bind parameters;
* :mod:`.connections`: one autocommit PostgreSQL connection per worker thread (one round trip per event);
* :mod:`.recorder`: the writes (open an attempt, close it and move the counters once);
* :mod:`.runlog`: the one structured log line per run;
* :mod:`.handlers`: the signal receivers that turn Celery's events into those writes.

Round trips per run (the worker-overhead benchmark measures them):

* ``task_prerun``: ONE upsert on ``(celery_task_id, attempt)``: the row, state ``running``
  (a redelivered message resets its own row instead of adding one, if that row is ``running``
  or ``lost``). An attempt that already finished (``success``, ``failure``, ``retry``,
  ``skipped``) is never reset: the upsert leaves its row alone and the run's state is marked
  a duplicate (:mod:`dataforge.worker.run_state`), so the task ends that delivery without
  running it (and postrun writes nothing for it).
* ``task_success`` / ``task_failure``: ONE transaction: the execution row goes from
  ``running`` to its outcome and, only if that UPDATE hit a running row, the schedule's
  counters move with atomic ``col = col + 1`` SQL (so a duplicate event never counts twice).
* ``task_retry``: the attempt becomes ``retry``; counters wait for the run's final outcome.
* ``task_postrun``: closes ``skipped`` runs (state ``IGNORED``) and anything else still
  running, and writes the one structured log line of the run.

Parent-side events (the worker's main process, where no postrun follows): ``task_failure``
with ``WorkerLostError`` (child killed: SIGKILL, OOM) marks the attempt ``lost``; a hard time
limit (``TimeLimitExceeded``) or a terminating ``revoke`` mark it ``failure``. Each frees the
run lock with ``release_owned_by(key, task_id)``: only if the lock is still held by a token
of that task id, so a lock that another, live run took meanwhile is never freed.

Who writes which column of ``scheduled_tasks`` (so the worker never races the scheduler):
beat owns ``next_run_at``, ``last_run_at`` and ``run_count`` (advanced together by its
compare-and-set at dispatch; the run's task id is derived from ``run_count``). The worker owns
the outcome columns: ``success_count``, ``failure_count``, ``last_status``, ``last_error``,
bumped once per finished run (not per attempt; a skipped run bumps nothing). So
``run_count - success_count - failure_count`` is the runs dispatched but not finished
(queued, running, skipped or lost with no parent left to report them).

A database outage never fails a task: every handler catches, logs and counts
(:class:`~.recorder.RecorderStats`).
"""
