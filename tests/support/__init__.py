"""Helpers shared by the test packages (service URLs, fresh databases, processes)."""
