# Image for the worker, beat and migrate services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /srv/dataforge
COPY pyproject.toml README.md alembic.ini ./
COPY dataforge ./dataforge
COPY refactor_tool ./refactor_tool
COPY compat ./compat
COPY migrations ./migrations
RUN pip install --no-cache-dir .
USER nobody
