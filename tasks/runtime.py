"""What every flow does first: take the worker's ``DECFLOW_*`` environment in deployed runs, and
send the library's log lines (``decflow.*``: epochs, losses, k-means passes, cluster sizes,
partitions labelled) to the Prefect run's logs and console, secrets redacted."""

import contextlib
import copy
import datetime as dt
import functools
import logging
import os

from decflow import locks
from decflow.config import PipelineConfig, apply_environment
from decflow.data import sources
from decflow.redaction import redact

LIBRARY_LOGGER = "decflow"


class _RunRecords(logging.Handler):
    """Hands a record to Prefect's handler only inside a flow or task run (threads outside a run,
    e.g. Dask's, have no run to log to), after redacting secrets from the message."""

    def __init__(self, target: logging.Handler):
        super().__init__(level=target.level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        try:
            message = redact(record.getMessage())
        except Exception:  # a bad format string: let logging report it as usual
            self.handleError(record)
            return
        clean = logging.makeLogRecord({**record.__dict__, "msg": message, "args": ()})
        self.target.handle(clean)


def _expected_failure(exc_info) -> BaseException | None:
    """The exception of a record when it is one of the kinds a user fixes (data, config, a
    service down, a conflict, partitions that failed with their causes): its message says
    everything, a traceback would only bury it."""
    from decflow.errors import (ConfigError, Conflict, DataError, PartitionsFailed,
                                ServiceUnavailable)

    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    kinds = (ConfigError, Conflict, DataError, PartitionsFailed, ServiceUnavailable)
    return exc if isinstance(exc, kinds) else None


class _Redact(logging.Filter):
    """Redacts secrets from a record's message and exception text before a handler formats it
    (Prefect's own handlers log a failed run's exception, message and traceback), and replaces
    the traceback of an expected failure (``_expected_failure``) by its one-line message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            return True
        expected = _expected_failure(record.exc_info)
        if expected is not None:
            line = f"{type(expected).__name__}: {expected}"
            if str(expected) not in message:
                message = f"{message.rstrip(': ')}: {line}"
            record.exc_info, record.exc_text = None, None
        if redact(message) != message or expected is not None:
            record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_PREFECT_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra")


def redact_prefect_logs() -> None:
    """Put the redacting filter on every handler of Prefect's loggers (once per handler)."""
    for name in _PREFECT_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _Redact) for f in handler.filters):
                handler.addFilter(_Redact())


def forward_library_logs(level: int = logging.INFO) -> None:
    """Attach Prefect's run-log and console handlers to the ``decflow`` logger (once per
    process), so library progress reaches the run's logs with or without a terminal."""
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    redact_prefect_logs()
    logger = logging.getLogger(LIBRARY_LOGGER)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    if any(isinstance(h, _RunRecords) for h in logger.handlers):
        return
    # Prefect's own configured handlers for extra loggers (PREFECT_LOGGING_EXTRA_LOGGERS), so
    # the console format and API settings are the user's.
    targets = [h for h in logging.getLogger("prefect.extra").handlers
               if isinstance(h, (APILogHandler, PrefectConsoleHandler))]
    if not any(isinstance(h, APILogHandler) for h in targets):
        targets.append(APILogHandler())
    for target in targets:
        logger.addHandler(_RunRecords(target))


def prepare_run(config: PipelineConfig) -> PipelineConfig:
    """Forward library logs; refuse labels inside the source (``ConfigError``); in a deployed
    run, the worker's ``DECFLOW_*`` environment over the deployment's ``config`` parameter
    (outside deployments the CLI already applied it when it loaded the file, below any
    explicit overrides)."""
    from prefect import get_run_logger
    from prefect.runtime import deployment

    forward_library_logs()
    sources.check_locations(config.source.uri, config.labels_uri())
    if deployment.id is not None:
        config, keys = apply_environment(config)
        if keys:
            get_run_logger().info("the worker's environment sets %s", ", ".join(keys))
    if redact(config.tracking_uri()) != config.tracking_uri():
        # MLflow prints each finished run's URL, built from the tracking URI, password included
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return config


def retry_on_io(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a task whose failure is I/O (a flaky store or
    network), never one whose data or config is wrong (the same input fails the same way)."""
    try:
        state.result()
    except (OSError, ConnectionError, TimeoutError):
        return True
    except Exception:  # noqa: BLE001 - any other failure is not transient
        return False
    return False


@contextlib.contextmanager
def night_lock(config: PipelineConfig, day: dt.date):
    """Held by every run that writes ``day``'s labels (the nightly run for it, ``score``,
    backfill): a second one is refused at once (``Conflict``, exit code 5), never interleaved.

    Two locks: a ``flock`` under ``<home>/locks`` (processes sharing the home, with or without
    a server), then, with a Prefect server (``PREFECT_API_URL``), the night's slot of a global
    concurrency limit on it (``server_locks``): runs on other hosts, with other homes, writing
    the same labels dataset are refused too."""
    from .server_locks import night_slot

    with locks.hold(config.home, *locks.night(config.source.date_column, day.isoformat())), \
            night_slot(config, day):
        yield


def registry_lock(config: PipelineConfig) -> contextlib.AbstractContextManager:
    """Held while a gate's verdict or a rollback moves the aliases of the model: the check that
    the champion is the one the gate compared against and the moves happen as one step."""
    name = config.registry.model_name
    return locks.hold(config.home, f"registry-{name}", f"an alias move of model {name!r}",
                      wait_s=config.registry.lock_wait_s)


def redact_errors(fn):
    """Put under ``@task``/``@flow``: an exception whose message holds a secret (a password in
    a URI, a secret query value) leaves with the message redacted, same type where the type
    allows, so the run's state message on the Prefect server and its logs never hold it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            text = str(exc)
            if redact(text) == text:
                raise
            raise _redacted(exc, redact(text)) from None

    return wrapper


def _redacted(exc: Exception, message: str) -> Exception:
    """A copy of ``exc`` with ``message``, or a RuntimeError naming its type when the type keeps
    its message elsewhere than in ``args``."""
    try:
        clean = copy.copy(exc)
        clean.args = (message,)
        for attribute in ("message", "msg"):  # e.g. MlflowException.message
            if isinstance(getattr(clean, attribute, None), str):
                setattr(clean, attribute, message)
        if str(clean) == message:
            return clean.with_traceback(None)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied
        pass
    return RuntimeError(f"{type(exc).__name__}: {message}")
