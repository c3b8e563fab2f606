"""Operator tools built on the runtime: the end-to-end demo and the worker/beat process supervisor."""
