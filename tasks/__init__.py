"""Prefect tasks: each does one idempotent side effect (apply a batch, wait healthy, report).

Runtime errors decide retries: ``TemporaryError`` is retried by Prefect, ``PermanentError``
fails at once (kopf's split), so a missing image is not retried three times.
"""
