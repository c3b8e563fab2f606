"""Legacy compatibility: the ``handler_path`` world the migration comes from, as one plug-in.

* :mod:`.names`: the legacy executor's task name and the modules that register it;
* :mod:`.paths`: the four ``handler_path`` spellings and the map file ``dataforge convert`` writes;
* :mod:`.switch`: the persisted switch (``dataforge legacy enable|disable``) and its hit counter;
* :mod:`.resolve`: where a ``handler_path`` leads (new task, or the script's ``run``), refusing anything else;
* :mod:`.plugin`: what the runtime does for legacy messages and rows (installed by the app factory);
* :mod:`.executor`, :mod:`.forwarder`: the legacy executor name's base class and its switch-off registration;
* :mod:`.status`: ``dataforge legacy status``.

The rollback shim itself is ``compat/celery_tasks_legacy.py``; docs/rollback.md says how the
pieces fit. Removing the legacy path is removing this package, ``compat/`` and its
installation in :func:`dataforge.celery_app.create_app`.

Importing the package imports nothing: the codemod and the migrations read :mod:`.paths`
without loading Celery.
"""
