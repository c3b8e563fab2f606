"""The legacy compatibility shim, kept only for rollback (see docs/rollback.md)."""
