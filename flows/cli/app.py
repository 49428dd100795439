"""The `decflow` command line: demo, run, validate, score, promote, rollback, backfill, serve,
serve-model, deploy, ui, adopt, show-config, history, report, sweep-k, generate. Every command
that takes ``--config`` takes ``--set section.key=value`` (repeatable) over the file and the
``DECFLOW_*`` environment.

Exit codes (the same for every command; flows run in-process, so a failed flow's exception
reaches the CLI and is mapped by its type):

====  =========================================================================================
0     success
1     the data failed its checks or is unusable (``decflow.errors.DataError``, which includes
      ``DataValidationError``); also a promotion rejected by its gates (``Rejected``: a first
      version that fails them leaves no champion to label with), a registered model whose
      files differ from their recorded digests (``ModelIntegrityError``: check the artifact
      store, then ``decflow adopt`` a version you trust, or retrain), a backfill with failed
      partitions, a rollback with nothing to roll back to
2     usage or config error (a bad option, ``typer.BadParameter``, ``ConfigError``; also a
      model version or alias that does not exist, the same from every command)
3     a service unavailable (``decflow.errors.ServiceUnavailable``): retry later
4     internal error (any other exception): one line ``internal error: <Type>: <message>``;
      the traceback is written to ``<home>/errors/<UTC time>-<pid>.txt``, or printed with
      ``decflow --traceback <command> ...``
5     conflict (``decflow.errors.Conflict``): another run is writing the same night's labels
      (in this home, or on another host or home sharing the Prefect server), or moving the
      model's aliases, or moved them since this run's gate compared; nothing was written or
      moved: retry when it is done. Also a backfill whose only failed nights were held so
128+n stopped by signal n (143: SIGTERM, 130: SIGINT/Ctrl-C): the run was ended cleanly
====  =========================================================================================

Every message printed goes through ``decflow.redaction.redact`` (no passwords from URIs).
"""

import contextlib
import datetime as dt
import logging
import os
import traceback as tb
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from decflow.flows.cli.options import state

EXIT_DATA, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERNAL, EXIT_CONFLICT = 1, 2, 3, 4, 5


def _fail(exc: Exception, show_traceback: bool) -> int:
    """Print what went wrong (secrets redacted) and return the exit code for ``exc``."""
    from decflow.errors import (ConfigError, Conflict, DataError, ModelIntegrityError, Rejected,
                                ServiceUnavailable, failure_class)
    from decflow.redaction import redact

    message = redact(str(exc))
    code, _ = failure_class(exc)
    words = ((ConfigError, "config error"), (DataError, "data error"), (Rejected, "rejected"),
             (ModelIntegrityError, "model integrity"),
             (ServiceUnavailable, "service unavailable"), (Conflict, "conflict"))
    what = next((word for kind, word in words if isinstance(exc, kind)), None)
    line = (f"{what}: {message}" if what is not None else
            f"internal error: {type(exc).__name__}" + (f": {message}" if message else ""))
    text = redact("".join(tb.format_exception(exc)))
    if show_traceback:
        typer.echo(text, err=True)
    elif code == EXIT_INTERNAL:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = Path(state["home"] or ".decflow") / "errors" / f"{stamp}-{os.getpid()}.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            line += (f"\ntraceback written to {path} (`decflow --traceback <command> ...` "
                     "prints it instead)")
        except OSError as write_error:
            typer.echo(text, err=True)
            line += f"\n(traceback printed above: cannot write {path}: {write_error})"
    typer.echo(line, err=True)
    return code


# One word per thing on every command: the night is --run-date, a registered model (version
# number or alias) is --model, a folder written is --out-dir, a dataset written is --out-uri
# (report's --out stays: one file). The old spellings are accepted for one release, hidden from
# --help, with a note on stderr.
RENAMED = {
    "validate": {"--date": "--run-date"},
    "score": {"--date": "--run-date", "--model-version": "--model"},
    "promote": {"--date": "--run-date", "--candidate": "--model"},
    "adopt": {"--version": "--model"},
    "generate": {"--end-date": "--run-date", "--out": "--out-uri"},
    "sweep-k": {"--out": "--out-dir"},
    "history": {"--out": "--out-dir"},
}


def rename_options(command: str, args: list[str]) -> list[str]:
    """``args`` of ``command`` with old option spellings replaced (``--date X`` and
    ``--date=X``), up to a ``--``; each replacement noted on stderr."""
    renames, out = RENAMED.get(command, {}), []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if name in renames:
            typer.echo(f"note: {command} {name} is now {renames[name]} ({name} goes away in "
                       f"the next release)", err=True)
            arg = renames[name] + eq + value
        out.append(arg)
    return out


class _ExitCodes(TyperGroup):
    """Maps every command's exceptions to the exit codes of the module docstring, in one place;
    typer's own exits and usage errors (code 2) pass through. Also takes the old spellings of
    renamed options (``RENAMED``)."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        return name, command, rename_options(name, rest)

    def invoke(self, ctx):
        from decflow.environment import end_without_a_final_collection
        from decflow.errors import Stopped

        state["home"] = None
        end_without_a_final_collection()
        stop_on_signals()
        show_library_lines()
        try:
            with _bars(ctx):
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Stopped as exc:
            typer.echo(f"stopped by {exc.signame}: the run was ended (CRASHED on the Prefect "
                       "server, KILLED in MLflow); nothing half-written is visible", err=True)
            raise typer.Exit(128 + exc.signum) from None
        except Exception as exc:
            raise typer.Exit(_fail(exc, bool(ctx.params.get("traceback")))) from None


def show_library_lines() -> None:
    """The ``decflow`` logger's INFO lines (the Dask dashboard, partitions validated) reach
    Prefect's console handler, which every command that runs anything has configured; inside a
    flow run ``tasks/runtime.py`` forwards them as well, at the same level."""
    logger = logging.getLogger("decflow")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def _bars(ctx):
    """Progress bars for the command's long work (``flows/cli/bars.py``) on a terminal."""
    from decflow.flows.cli.bars import TerminalBars, wanted

    if not wanted(bool(ctx.params.get("quiet"))):
        yield
        return
    from decflow import progress

    bars = TerminalBars()
    try:
        with progress.listening(bars):
            yield
    finally:
        bars.close()


# How long a stopped command may take to unwind (close its MLflow run, stop its Dask cluster
# and Prefect's temporary server) before it kills what it started and exits at once.
STOP_GRACE_S = 60.0


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise ``decflow.errors.Stopped`` in the main thread: the command
    unwinds as from an error (the flow run ends CRASHED, the MLflow run KILLED, a half-written
    file is removed, the Dask cluster and Prefect's temporary server stop) and exits with
    128 + the signal's number (143, 130). A second signal while it unwinds changes nothing;
    after ``STOP_GRACE_S`` a watchdog SIGKILLs every process the command started and exits."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    stopping: list[int] = []

    def handler(signum, frame):
        from decflow.errors import Stopped

        if stopping:
            return
        stopping.append(signum)
        timer = threading.Timer(STOP_GRACE_S, _hard_stop, args=(signum,))
        timer.daemon = True
        timer.start()
        raise Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _hard_stop(signum: int) -> None:
    """The unwinding took too long: SIGKILL every descendant, then exit 128 + ``signum``."""
    import psutil

    typer.echo(f"still stopping after {STOP_GRACE_S:.0f} s: killing the processes it started",
               err=True)
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=10)
    os._exit(128 + signum)


# add_completion: `decflow --install-completion` (bash, zsh, fish, PowerShell) and
# `--show-completion`; completion runs the command itself, whose imports are lazy (0.2 s here).
app = typer.Typer(cls=_ExitCodes, add_completion=True, no_args_is_help=True,
                  pretty_exceptions_show_locals=False,
                  help="Nightly re-clustering of a growing table with Deep Embedded Clustering. "
                       "Exit codes: 0 success, 1 data failed its checks (or a promotion was "
                       "rejected), 2 usage or config error, 3 a service unavailable, 4 internal "
                       "error, 5 conflict (another run holds the night or the registry).")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"decflow {version('decflow')}")
        raise typer.Exit()


@app.callback()
def _options(traceback: Annotated[bool, typer.Option(
        "--traceback", help="On an error, print the full traceback (secrets redacted) instead "
                            "of writing an internal error's to <home>/errors/.")] = False,
             version: Annotated[bool, typer.Option(
                 "--version", callback=_print_version, is_eager=True,
                 help="Print decflow's version and exit.")] = False,
             quiet: Annotated[bool, typer.Option(
                 "--quiet", "-q", help="No progress bars (they show only on a terminal "
                                       "anyway).")] = False):
    """Global options (given before the command)."""
