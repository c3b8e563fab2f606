"""DataForge backend (legacy layout: jobs in scripts/, a few tasks in app/tasks/)."""
