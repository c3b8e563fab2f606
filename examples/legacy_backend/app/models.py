"""The two scheduling tables (see schema.sqlite.sql)."""

from datetime import datetime

from sqlalchemy import Column, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import declarative_base

Base = declarative_base()


class ScheduledTask(Base):
    __tablename__ = "scheduled_tasks"

    id = Column(Integer, primary_key=True, autoincrement=True)
    name = Column(String(128), nullable=False, unique=True)
    description = Column(Text)
    task_type = Column(String(16), nullable=False)  # interval | cron | once
    task_name = Column(String(255))  # new system: registered Celery task name
    handler_path = Column(String(255))  # old system: scripts:<name> (and three other spellings)
    interval_seconds = Column(Integer)
    cron_expression = Column(String(128))
    run_at = Column(DateTime)
    timezone = Column(String(64), nullable=False, default="UTC")
    handler_kwargs = Column(Text, nullable=False, default="{}")
    status = Column(String(16), nullable=False, default="active")
    timeout_seconds = Column(Integer)
    max_retries = Column(Integer, nullable=False, default=0)
    last_run_at = Column(DateTime)
    next_run_at = Column(DateTime)
    run_count = Column(Integer, nullable=False, default=0)
    success_count = Column(Integer, nullable=False, default=0)
    failure_count = Column(Integer, nullable=False, default=0)
    last_status = Column(String(16))
    last_error = Column(Text)
    created_at = Column(DateTime, nullable=False, default=datetime.utcnow)
    updated_at = Column(DateTime, nullable=False, default=datetime.utcnow, onupdate=datetime.utcnow)


class TaskExecution(Base):
    __tablename__ = "task_executions"

    id = Column(Integer, primary_key=True, autoincrement=True)
    scheduled_task_id = Column(Integer, ForeignKey("scheduled_tasks.id", ondelete="SET NULL"), index=True)
    celery_task_id = Column(String(64))
    task_name = Column(String(255))
    handler_path = Column(String(255))
    status = Column(String(16), nullable=False)
    started_at = Column(DateTime)
    finished_at = Column(DateTime)
    duration_ms = Column(Integer)
    result = Column(Text)
    error = Column(Text)
