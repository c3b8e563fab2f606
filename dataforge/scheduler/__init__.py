"""Scheduling logic that is not Celery glue: the task registry and schedule math."""
