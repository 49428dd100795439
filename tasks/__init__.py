"""Prefect tasks: thin, named wrappers over the decflow library (retries on I/O only)."""
