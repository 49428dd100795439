"""Secrets out of everything decflow prints, logs or stores: passwords in URLs and
secret-looking query values become ``***``. Config values are logged (MLflow params,
``config.yaml``), sent as Prefect parameters and printed in reports and errors; every such place
goes through ``redact``."""

import re

REDACTED = "***"

# user:password@ in any URL, and secret-looking query parameters (?password=, &token=, ...).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]+):"
                           r"(?P<secret>[^@\s/'\"]+)@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:[A-Za-z0-9_.-]*(?:password|passwd|secret|token|"
                           r"signature|access_key|secret_key|credential)[A-Za-z0-9_.-]*)=)"
                           r"(?P<secret>[^&\s'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of URLs in it (``user:pw@host``) and secret-looking query
    values (``?password=``, ``&token=``, ...) replaced by ``***``.

    Config values are logged (MLflow params, ``config.yaml``), sent as Prefect parameters and
    printed in reports and errors; every such place goes through this.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact_tree(value):
    """``value`` (str, or dicts and lists of them) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    return value
