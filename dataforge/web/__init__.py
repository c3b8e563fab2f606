"""The operator console of ``dataforge serve``: a JSON API, server-rendered pages, metrics.

What Django admin gives django-celery-beat users and Flower gives Celery users, on the same
schedule service as the ``dataforge schedules`` CLI (one code path for every write). Build it
with :func:`create_web_app`; ``dataforge serve`` runs it under uvicorn.
"""

from dataforge.web.app import create_web_app

__all__ = ["create_web_app"]
