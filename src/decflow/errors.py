"""The kinds of failure a user must tell apart (the CLI maps each to its own exit code).

- ``DataError``: the input data is unusable: it failed its checks (``DataValidationError`` is
  one), or a file is corrupt, truncated, of the wrong schema, missing or empty. Fix the data.
- ``ConfigError``: the configuration or the command line asks for something invalid.
- ``ServiceUnavailable``: a server the run needs (MLflow, Prefect, Dask, the object store)
  did not answer within its time budget. Retry later; nothing was written or moved.
- ``Rejected``: a model version failed the promotion gates where the command needed it to
  pass (a model's first version: there is no champion to label with). Nothing was written.
- ``ModelIntegrityError``: a registered model's files differ from the digests recorded when it
  was registered (or none were recorded). Nothing of it was loaded; check the artifact store,
  then ``decflow adopt`` or retrain.
- ``Conflict``: another run holds the night or the registry. Retry when it is done.

Anything else is an internal error (a bug). Each is a ``ValueError``/``RuntimeError`` subclass
so existing ``except ValueError`` callers keep working.
"""


class DataError(ValueError):
    """The input data cannot be used as it is; the message names the file, partition, column,
    and the expected vs found value."""


class ConfigError(ValueError):
    """The configuration (file, environment or command line) is invalid; the message names the
    key and the expected vs found value."""


class ServiceUnavailable(RuntimeError):
    """A server the run needs did not answer in time; the message names it (without secrets)
    and the time budget spent."""


class Rejected(RuntimeError):
    """A model version failed its promotion gates where the command needed it to pass; the
    message names the failed gates. Nothing was written or promoted."""


class ModelIntegrityError(RuntimeError):
    """A registered model's files do not match the digests recorded at registration (or none
    were recorded); the message names the file and how to adopt or replace the version."""


class Conflict(RuntimeError):
    """Another run holds what this one needs (the same night, the registry's aliases), or moved
    it first; nothing was written or moved. Retry once the other run is done."""


class PartitionsFailed(RuntimeError):
    """Some partitions of a run over several failed (a backfill); the message lists each with
    its cause, and the others were done."""


# The exit-code classes, in the order they are tried (a subclass before its base): the CLI's
# exit code, and the class word of a failed night's event (``failure_class``).
FAILURE_CLASSES: tuple[tuple[type[Exception], int, str], ...] = (
    (ConfigError, 2, "config"),
    (DataError, 1, "data"),
    (Rejected, 1, "data"),
    (ModelIntegrityError, 1, "data"),
    (ServiceUnavailable, 3, "service"),
    (Conflict, 5, "conflict"),
)
INTERNAL = (4, "internal")


def failure_class(exc: BaseException) -> tuple[int, str]:
    """``(exit code, class)`` of a failure: ``(2, "config")``, ``(1, "data")``,
    ``(3, "service")``, ``(5, "conflict")``, else ``(4, "internal")`` (a bug)."""
    return next(((code, word) for kind, code, word in FAILURE_CLASSES if isinstance(exc, kind)),
                INTERNAL)


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM from a service manager or ``docker stop``, SIGINT
    from Ctrl-C) and unwinds: runs end CRASHED/KILLED, servers and clusters it started stop.
    A ``KeyboardInterrupt``, so that what treats Ctrl-C as "stop now" does so for both."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signame}")
