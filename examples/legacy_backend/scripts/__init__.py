"""Scheduled jobs: one module per job, each with a module-level ``run``."""
