"""The `decflow` command line: demo, run, validate, score, promote, rollback, backfill, serve,
deploy, ui, adopt, show-config, history, report, sweep-k, generate. Every command that takes ``--config`` takes
``--set section.key=value`` (repeatable) over the file and the ``DECFLOW_*`` environment.

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
5     conflict (``decflow.errors.Conflict``): another run is writing the same night's labels,
      or moving the model's aliases, or moved them since this run's gate compared; nothing
      was written or moved: retry when it is done
====  =========================================================================================

Every message printed goes through ``decflow.redaction.redact`` (no passwords from URIs).
"""

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import traceback as tb
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

EXIT_DATA, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERNAL, EXIT_CONFLICT = 1, 2, 3, 4, 5

# Where an internal error's traceback goes: the home of the config the command loaded (set by
# _load and the --home commands; reset for every invocation).
_state: dict[str, Any] = {"home": None}


def _fail(exc: Exception, show_traceback: bool) -> int:
    """Print what went wrong (secrets redacted) and return the exit code for ``exc``."""
    from decflow.redaction import redact
    from decflow.errors import (ConfigError, Conflict, DataError, ModelIntegrityError, Rejected,
                                ServiceUnavailable)

    message = redact(str(exc))
    if isinstance(exc, ConfigError):
        code, line = EXIT_USAGE, f"config error: {message}"
    elif isinstance(exc, DataError):
        code, line = EXIT_DATA, f"data error: {message}"
    elif isinstance(exc, Rejected):
        code, line = EXIT_DATA, f"rejected: {message}"
    elif isinstance(exc, ModelIntegrityError):
        code, line = EXIT_DATA, f"model integrity: {message}"
    elif isinstance(exc, ServiceUnavailable):
        code, line = EXIT_SERVICE, f"service unavailable: {message}"
    elif isinstance(exc, Conflict):
        code, line = EXIT_CONFLICT, f"conflict: {message}"
    else:
        code, line = EXIT_INTERNAL, f"internal error: {type(exc).__name__}" + (
            f": {message}" if message else "")
    text = redact("".join(tb.format_exception(exc)))
    if show_traceback:
        typer.echo(text, err=True)
    elif code == EXIT_INTERNAL:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        path = Path(_state["home"] or ".decflow") / "errors" / f"{stamp}-{os.getpid()}.txt"
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


def _renamed(command: str, args: list[str]) -> list[str]:
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
        return name, command, _renamed(name, rest)

    def invoke(self, ctx):
        _state["home"] = None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            raise typer.Exit(_fail(exc, bool(ctx.params.get("traceback")))) from None


app = typer.Typer(cls=_ExitCodes, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_show_locals=False,
                  help="Nightly re-clustering of a growing table with Deep Embedded Clustering. "
                       "Exit codes: 0 success, 1 data failed its checks (or a promotion was "
                       "rejected), 2 usage or config error, 3 a service unavailable, 4 internal "
                       "error, 5 conflict (another run holds the night or the registry).")


@app.callback()
def _options(traceback: Annotated[bool, typer.Option(
        "--traceback", help="On an error, print the full traceback (secrets redacted) instead "
                            "of writing an internal error's to <home>/errors/.")] = False):
    """Global options (given before the command)."""


ConfigOpt = Annotated[Path, typer.Option("--config", "-c", exists=True, dir_okay=False,
                                         help="Pipeline config (YAML). DECFLOW_<SECTION>__<KEY> "
                                              "environment variables override its values.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="SECTION.KEY=VALUE",
    help="Override one config value (repeatable; the value is read as YAML). Precedence: "
         "the config file < DECFLOW_<SECTION>__<KEY> environment variables < --set.")]
HomeOpt = Annotated[Path, typer.Option(help="Directory for the embedded stores (MLflow sqlite "
                                            "database and artifacts, Prefect database, labels).")]
# `ui` and `serve` also run without a config (the embedded defaults).
OptionalConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", exists=True, dir_okay=False,
    help="Pipeline config (YAML); default: the embedded defaults. DECFLOW_<SECTION>__<KEY> "
         "environment variables override its values.")]
CronOpt = Annotated[Optional[str], typer.Option(
    help="Nightly schedule as a cron string (default: '0 2 * * *', 02:00).")]
TimezoneOpt = Annotated[Optional[str], typer.Option(
    help="IANA time zone of the nightly schedule, e.g. Europe/Berlin (default: UTC).")]


def RunDateOpt(help: str):  # noqa: N802 - an option type, named like the others
    """``--run-date``: the night (a date partition, YYYY-MM-DD), with this help."""
    return Annotated[Optional[str], typer.Option("--run-date", help=help)]


def ModelOpt(help: str):  # noqa: N802
    """``--model``: a registered version number or alias, with this help."""
    return Annotated[str, typer.Option("--model", help=help)]


def _date(value: Optional[str], name: str) -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name)


def _environment(home: Path | str | None = None) -> None:
    """Quiet, local defaults before Prefect/MLflow are imported (users' settings win).

    With ``home`` and no ``PREFECT_API_URL``, Prefect keeps its database under ``home/prefect``,
    so every command of one config (and ``decflow ui`` on it) shares one run history.
    """
    from decflow.environment import quiet_defaults

    quiet_defaults()
    if home is not None and "PREFECT_API_URL" not in os.environ:
        # Prefect's ephemeral mode keeps its database beside the config's other stores.
        prefect_home = Path(home) / "prefect"
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(prefect_home.resolve()))


def _setup(config: Path, sets: list[str] | None = None):
    """The config, then the environment for its home (before Prefect is imported)."""
    cfg = _load(config, sets)
    _environment(cfg.home)
    return cfg


def _require_model(cfg, ref: str) -> None:
    """Every command given a model reference checks it first, the same way (``ConfigError``:
    exit code 2 naming the model, the reference and the store), before any flow starts."""
    from decflow.registry.versions import require_version

    require_version(cfg.tracking_uri(), cfg.registry.model_name, ref)


def _load(config: Path, sets: list[str] | None = None):
    """The config file < ``DECFLOW_*`` environment < ``--set`` items (a ``ConfigError``, exit
    code 2, names each bad key and where it was set); its home receives the traceback of an
    internal error."""
    from decflow.config import load_config, parse_overrides

    cfg = load_config(config, parse_overrides(sets), overrides_from="--set")
    _state["home"] = cfg.home
    return cfg


def _report(result: dict, config, last_words: list[str] | None = None) -> None:
    """Print the run's summary table and the path of its HTML report; with ``last_words`` the
    report's line is appended there instead (``demo`` prints it at exit, after Prefect's
    temporary server has said it stopped, so it is the output's last line)."""
    from rich.console import Console

    from decflow.redaction import redact
    from rich.table import Table

    console = Console()
    table = Table(title="recluster", show_header=False)
    table.add_row("run date", result["run_date"])
    table.add_row("labels", f"{result['labels']['path']} ({result['labels']['rows']} rows, "
                            f"model version {result['labels']['model_version']})")
    table.add_row("MLflow run", f"{result['run_id']} in {redact(config.tracking_uri())} "
                                f"(experiment {config.registry.experiment!r})")
    verdict = (result.get("promotion") or {}).get("decision", "pending (not gated)")
    table.add_row("registered model", f"{config.registry.model_name} version "
                                      f"{result['model_version']} (promotion: {verdict}); "
                                      f"champion is version {result['champion_version']}")
    for key in ("acc", "nmi", "ari", "silhouette", "mean_confidence",
                "smallest_cluster_share"):
        if key in result["metrics"]:
            table.add_row(key, f"{result['metrics'][key]:.4f}")
    console.print(table)
    if result.get("report"):
        line = f"run report: {result['report']['path']}  (open it in a browser)"
        if last_words is None:
            console.print(line, soft_wrap=True)
        else:
            last_words.append(line)


@app.command()
def demo(home: HomeOpt = Path(".decflow"),
         run_date: RunDateOpt("Last of the 3 demo dates and the run date (default: "
                              "yesterday).") = None,
         pretrain_epochs: Annotated[Optional[int], typer.Option(
             help="Override pretraining epochs (default: the shipped 'auto' budget).")] = None):
    """Write scikit-learn's digits as a 3-day source table under HOME and run `recluster` on it
    with embedded MLflow (sqlite), Prefect (ephemeral) and Dask (LocalCluster)."""
    _state["home"] = str(home)
    _environment(home)
    from decflow.data.demo import demo_config, write_demo_source
    from flows.recluster import recluster, yesterday

    day = _date(run_date, "--run-date") or yesterday()
    config = demo_config(str(home))
    if pretrain_epochs is not None:
        config = config.model_copy(update={"train": config.train.model_copy(
            update={"pretrain_epochs": pretrain_epochs})})
    dates = write_demo_source(config.source.uri, day)
    typer.echo(f"demo source: {config.source.uri} (partitions {dates[0]} .. {dates[-1]})")
    from decflow.config import dump_config

    config_file = Path(config.home) / "demo" / "config.yaml"
    config_file.write_text(dump_config(config))
    typer.echo(f"demo config: {config_file} (for --config of the other commands)")
    # Exit handlers run last-registered first: this one, registered before the flow starts
    # Prefect's temporary server (whose handler stops it, with a log line), runs after it.
    import atexit

    last_words: list[str] = []
    atexit.register(lambda: last_words and typer.echo(last_words[-1]))
    _report(recluster(config=config, run_date=day, progress=sys.stderr.isatty()), config,
            last_words)


@app.command()
def run(config: ConfigOpt,
        run_date: RunDateOpt("Date to label; the training window ends here (default: "
                             "yesterday).") = None,
        sets: SetOpt = None):
    """Run the nightly `recluster` flow once: validate, train, register, write labels."""
    cfg = _setup(config, sets)

    from flows.recluster import recluster

    _report(recluster(config=cfg, run_date=_date(run_date, "--run-date"),
                      progress=sys.stderr.isatty()), cfg)


@app.command("show-config")
def show_config(config: ConfigOpt, sets: SetOpt = None):
    """Print the config a command would run with (file < DECFLOW_* environment < --set), as
    YAML with secrets redacted."""
    from decflow.config import dump_config

    typer.echo(dump_config(_load(config, sets)), nl=False)


@app.command()
def validate(config: ConfigOpt,
             run_date: RunDateOpt("Partition to check (default: yesterday).") = None,
             window: Annotated[bool, typer.Option(
                 help="Check the whole training window ending at --run-date instead of one "
                      "partition.")] = False,
             sets: SetOpt = None):
    """Run the data checks only; exit code 1 when an expectation fails."""
    cfg = _setup(config, sets)

    from decflow.data import storage
    from decflow.engine import partitions as scoring
    from decflow.engine.compute import dask_client
    from flows.recluster import yesterday

    day = _date(run_date, "--run-date") or yesterday()
    scan = storage.scan_night(cfg.source, day, None if window else 1,
                              cfg.validation.min_window_days)
    lineage = scan.lineage
    with dask_client(cfg.compute) as client:
        report = scoring.validate_scan(client, scan, cfg)
    typer.echo(f"{lineage.n_rows} rows from partitions {lineage.partitions or 'none'}"
               + (f" (missing: {lineage.missing_partitions})" if lineage.missing_partitions
                  else ""))
    typer.echo(report.summary())
    raise typer.Exit(0 if report.success else 1)


@app.command()
def score(config: ConfigOpt,
          run_date: Annotated[str, typer.Option(
              "--run-date", help="Partition to label (YYYY-MM-DD).")],
          model: ModelOpt("Registered version number or alias to score with.") = "champion",
          sets: SetOpt = None):
    """Label one partition with a registered model (write-back only, no training)."""
    cfg = _setup(config, sets)
    _require_model(cfg, model)

    from flows.score import score as score_flow

    out = score_flow(config=cfg, run_date=_date(run_date, "--run-date"), model=model)
    typer.echo(f"wrote {out['rows']} labels to {out['path']} with model version "
               f"{out['model_version']}")


@app.command()
def ui(config: OptionalConfigOpt = None,
       home: Annotated[Optional[Path], typer.Option(
           help="Show the embedded stores under this directory (default: .decflow; "
                "not with --config).")] = None,
       mlflow_port: Annotated[int, typer.Option(help="MLflow UI port.")] = 5000,
       prefect_port: Annotated[int, typer.Option(help="Prefect UI port.")] = 4200,
       host: Annotated[str, typer.Option(
           help="Address both UIs listen on. The default serves this machine only; another "
                "address serves the network, without authentication.")] = "127.0.0.1",
       sets: SetOpt = None):
    """Serve the MLflow UI and the Prefect UI for a config's stores, on 127.0.0.1 unless --host
    says otherwise (Ctrl-C stops).

    Runs of `decflow demo`, `run`, `score`, `backfill`, `promote` and `rollback` with the same
    config appear here. A store that is already a server (an http(s) tracking URI, or
    PREFECT_API_URL) is not started again: its address is printed instead."""
    from decflow.redaction import redact

    if config is not None and home is not None:
        raise typer.BadParameter("give --config or --home, not both (a config names its home)",
                                 param_hint="--home")
    if config is not None:
        cfg = _load(config, sets)
    else:
        from decflow.config import load_config, parse_overrides

        cfg = load_config(None, {"home": str(home or ".decflow"), **parse_overrides(sets)},
                          env={}, overrides_from="--set")
    _state["home"] = cfg.home
    _environment(cfg.home)
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    procs, lines = [], []
    if not _loopback(host):
        typer.echo(f"warning: serving on {host}: anyone who can reach this machine can read "
                   f"and change these stores (the UIs have no authentication)", err=True)
    shown = host if _loopback(host) or host not in ("0.0.0.0", "::") else socket.gethostname()
    tracking = cfg.tracking_uri()
    if tracking.startswith(("http://", "https://")):
        lines.append(f"MLflow UI:  {redact(tracking)}  (a server: not started here)")
    else:
        procs.append(subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--host", host, "--port",
             str(mlflow_port), "--backend-store-uri", tracking,
             "--default-artifact-root", cfg.artifact_location()], env=env))
        lines.append(f"MLflow UI:  http://{shown}:{mlflow_port}")
    if os.environ.get("PREFECT_API_URL"):
        ui_url = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
        lines.append(f"Prefect UI: {redact(ui_url)}  (PREFECT_API_URL: not started here)")
    else:
        procs.append(subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host",
                                       host, "--port", str(prefect_port)], env=env))
        lines.append(f"Prefect UI: http://{shown}:{prefect_port}  "
                     f"(runs stored under {env['PREFECT_HOME']})")

    def _stop(signum, frame):  # `kill`/service managers stop both servers too, not only Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    typer.echo("\n".join(lines) + ("\n(Ctrl-C stops)" if procs else ""))
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        signal.signal(signal.SIGTERM, previous)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


@app.command()
def serve(config: OptionalConfigOpt = None, timezone: TimezoneOpt = None, cron: CronOpt = None,
          sets: SetOpt = None):
    """Serve the `recluster/nightly`, `backfill/on-demand` and `promote/on-demand` deployments
    from this process (Prefect's serve(), no work pool); Ctrl-C stops. Needs a Prefect server,
    whose scheduler creates the nightly runs: PREFECT_API_URL, e.g. from `decflow ui`."""
    _environment()
    from prefect import serve as serve_deployments
    from prefect.settings import get_current_settings

    from flows.deployments import build_deployments

    if not get_current_settings().api.url:
        typer.echo("decflow serve needs a Prefect server (an ephemeral one has no scheduler): "
                   "start one with `decflow ui` or `prefect server start`, then set "
                   "PREFECT_API_URL=http://127.0.0.1:4200/api", err=True)
        raise typer.Exit(2)
    try:
        deployments = build_deployments(_load(config, sets), cron=cron, timezone=timezone)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config")
    serve_deployments(*deployments)


@app.command()
def deploy(config: ConfigOpt,
           work_pool: Annotated[str, typer.Option(
               help="Work pool whose workers run the flows (created as a process pool when "
                    "missing).")] = "decflow",
           timezone: TimezoneOpt = None, cron: CronOpt = None, sets: SetOpt = None):
    """Create or update the `recluster/nightly`, `backfill/on-demand` and `promote/on-demand`
    deployments on the Prefect server (PREFECT_API_URL) with this config as their `config`
    parameter; a worker of the pool runs them (`prefect worker start --pool decflow`).

    Local relative paths in the config are made absolute. Secrets must not be in the config:
    the worker's environment supplies them, and its DECFLOW_* variables override the config in
    every deployed run."""
    cfg = _load(config, sets)
    _environment()
    from prefect.settings import get_current_settings

    from flows.deployments import absolute_paths, deploy as deploy_flows

    if not get_current_settings().api.url:
        typer.echo("decflow deploy needs a Prefect server: set PREFECT_API_URL, e.g. "
                   "http://127.0.0.1:4200/api (`decflow ui` or `prefect server start`)",
                   err=True)
        raise typer.Exit(2)
    try:
        names, created = deploy_flows(absolute_paths(cfg, str(Path.cwd())), work_pool,
                                      cron=cron, timezone=timezone)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config")
    if created:
        typer.echo(f"created work pool {work_pool!r} (type process)")
    for name in names:
        typer.echo(f"deployed {name} on work pool {work_pool!r}")
    typer.echo(f"start a worker where the project is installed: "
               f"prefect worker start --pool {work_pool}")


@app.command()
def promote(config: ConfigOpt,
            model: ModelOpt("Registered version number or alias to gate.") = "challenger",
            run_date: RunDateOpt("Compare both models on this partition instead of the window "
                                 "the candidate was trained on.") = None,
            sets: SetOpt = None):
    """Gate a candidate against the champion on the same rows; promote it when every gate
    passes (champion <- candidate, previous <- old champion). Exit code 1 when rejected."""
    cfg = _setup(config, sets)

    from rich.console import Console
    from rich.table import Table

    from flows.promote import promote as promote_flow

    day = _date(run_date, "--run-date")
    _require_model(cfg, model)
    out = promote_flow(config=cfg, candidate=model, run_date=day)
    table = Table(title=f"promotion of {cfg.registry.model_name} version {out['candidate']}")
    for col in ("gate", "result", "value", "threshold", "detail"):
        table.add_column(col)
    for g in out["gates"]:
        table.add_row(g["name"], "pass" if g["passed"] else "FAIL", _cell(g["value"]),
                      _cell(g["threshold"]), g["detail"])
    console = Console(width=160)
    console.print(table)
    console.print(out["summary"])
    raise typer.Exit(1 if out["decision"] == "reject" else 0)


@app.command()
def adopt(config: ConfigOpt,
          model: Annotated[str, typer.Option(
              "--model", help="Version number (or alias) registered before decflow recorded "
                              "content digests.")],
          sets: SetOpt = None):
    """Record the content digest of a version registered before decflow recorded them, so it
    loads again. Its files *as they are now* are trusted from here on: run it only for a
    version whose artifact store you trust (or retrain and register a new version)."""
    cfg = _setup(config, sets)

    from decflow.registry.versions import adopt_version

    out = adopt_version(cfg.tracking_uri(), cfg.registry.model_name, model)
    typer.echo(f"model {cfg.registry.model_name!r} version {out['version']}: recorded the "
               f"sha256 of its {out['files']} files (manifest sha256 "
               f"{out['manifest_sha256']}); decflow verifies them before every load")


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def report(config: ConfigOpt,
           run_date: RunDateOpt("The night whose newest recluster run to show (default: the "
                                "newest run).") = None,
           run_id: Annotated[Optional[str], typer.Option(help="An MLflow run id instead.")] = None,
           out: Annotated[Optional[Path], typer.Option(
               dir_okay=False, help="HTML file to write (default: "
                                    "<home>/reports/recluster-<run date>.html).")] = None,
           sets: SetOpt = None):
    """Write a nightly run's report: one self-contained HTML page (summary, validation, metrics,
    promotion gates, drift, cluster profiles, pictures) to open in any browser."""
    cfg = _setup(config, sets)

    from decflow.insight.report import report_command

    path = report_command(cfg, _date(run_date, "--run-date"), run_id, out)
    typer.echo(f"run report: {path.resolve()}")


@app.command("sweep-k")
def sweep_k(config: ConfigOpt,
            k: Annotated[str, typer.Option(
                "--k", help="The k to try: 4..16, 4..16..2 (a step) or 4,6,8.")] = "4..16",
            seeds: Annotated[int, typer.Option(
                help="Restarts per k; their agreement (ARI) is the stability.")] = 3,
            run_date: RunDateOpt("Last date of the training window (default: the newest "
                                 "partition).") = None,
            out_dir: Annotated[Optional[Path], typer.Option(
                file_okay=False, help="Folder for sweep_k.json, sweep_k.md and sweep_k.png "
                                      "(default: <home>/reports/sweep-k).")] = None,
            pretrain_epochs: Annotated[Optional[int], typer.Option(
                help="Pretraining epochs (default: the config's, as the nightly run; fewer is "
                     "faster but the embedding is less separated).")] = None,
            sets: SetOpt = None):
    """Help choose k: pretrain once on the training sample, then for each k run the
    pipeline's own initialisation over several seeds; report silhouette, stability across
    seeds and (with a label column) ACC/NMI, as a table and a chart, and recommend a k with
    its reason. Nothing is registered or written besides the three files."""
    cfg = _setup(config, sets)

    from decflow.insight.sweep_report import sweep_k_command

    sweep_k_command(cfg, k, _date(run_date, "--run-date"), seeds,
                    out_dir or Path(cfg.home) / "reports" / "sweep-k", pretrain_epochs)


@app.command()
def history(config: ConfigOpt,
            days: Annotated[Optional[int], typer.Option(
                min=1, help="Nights to show, ending at the newest (default: "
                            "monitoring.history_days, 30).")] = None,
            out_dir: Annotated[Optional[Path], typer.Option(
                file_okay=False, help="Folder for history.csv, history.md and "
                                      "drift_history.png (default: <home>/reports).")] = None,
            sets: SetOpt = None):
    """Drift and churn over the last nights: one row per night (its model and champion,
    promotion, label churn vs the champion, cluster-size shift vs the night before, quality,
    alerts), printed and written with its chart."""
    cfg = _setup(config, sets)

    from rich.console import Console
    from rich.table import Table

    from decflow.insight.monitoring import cell_text
    from decflow.insight.monitoring import history_command

    frame, paths = history_command(cfg, days, out_dir)
    if frame.empty:
        typer.echo(f"no nightly runs recorded in experiment {cfg.registry.experiment!r}")
    else:
        table = Table(title=f"{cfg.registry.model_name}: the last {len(frame)} night(s)")
        cols = ["run_date", "status", "model_version", "champion_version", "promotion",
                "label_churn", "size_shift_tvd", "size_shift_psi", "acc", "silhouette",
                "mean_confidence", "alert"]
        for c in cols:
            table.add_column(c.replace("_", " "))
        for _, row in frame.iterrows():
            table.add_row(*[cell_text(row[c], yes="ALERT") for c in cols])
        Console(width=200).print(table)
    typer.echo(f"chart: {paths['chart']}\ntable: {paths['csv']}, {paths['markdown']}")


@app.command()
def rollback(config: ConfigOpt, sets: SetOpt = None):
    """Swap champion and previous: the previous champion serves labels again."""
    cfg = _setup(config, sets)

    from decflow.errors import ConfigError, DataError
    from decflow.redaction import redact
    from flows.promote import rollback as rollback_flow

    try:
        out = rollback_flow(config=cfg)
    except (ConfigError, DataError):
        raise  # their own exit codes
    except ValueError as exc:  # nothing to roll back to
        typer.echo(redact(str(exc)), err=True)
        raise typer.Exit(1)
    typer.echo(f"{cfg.registry.model_name}: champion is version {out['restored']} again; "
               f"version {out['demoted']} is now 'previous'")


@app.command()
def backfill(config: ConfigOpt,
             start: Annotated[str, typer.Option(help="First date partition (YYYY-MM-DD).")],
             end: Annotated[str, typer.Option(help="Last date partition, inclusive.")],
             model: Annotated[str, typer.Option(
                 help="Model to score with: champion, challenger, previous or a version "
                      "number.")] = "champion",
             force: Annotated[bool, typer.Option(
                 help="Relabel partitions already labelled by the same model version.")] = False,
             retrain: Annotated[bool, typer.Option(
                 help="Run the full recluster flow for each date, in order, instead of "
                      "scoring with one model.")] = False,
             sets: SetOpt = None):
    """Label a range of date partitions on the Dask cluster (compute); resumable.

    Partitions already labelled by the same model version are skipped unless --force; a failed
    partition does not stop the others and is reported with its cause (exit code 1)."""
    cfg = _setup(config, sets)

    from flows.backfill import BackfillFailed, backfill as backfill_flow

    d1, d2 = _date(start, "--start"), _date(end, "--end")
    if d2 < d1:
        raise typer.BadParameter(f"--end {d2} is before --start {d1}", param_hint="--end")
    if retrain and (model != "champion" or force):
        raise typer.BadParameter("--retrain trains a new model for each date and always runs; "
                                 "--model and --force do not apply", param_hint="--retrain")
    if not retrain:
        _require_model(cfg, model)
    try:
        rows = backfill_flow(config=cfg, start=d1, end=d2, model=model, force=force,
                             retrain=retrain)
    except BackfillFailed as exc:
        typer.echo(str(exc))
        raise typer.Exit(1)
    for r in rows:
        typer.echo(f"{r['date']}  {r['status']:<9} {r['rows']:>7} rows  {r['seconds']:>7.2f} s  "
                   f"{r['detail']}")


@app.command()
def generate(rows: Annotated[int, typer.Option(
                 min=1, help="Rows in all, split evenly over the dates.")],
             days: Annotated[int, typer.Option(
                 min=1, help="Number of consecutive daily partitions.")],
             out_uri: Annotated[str, typer.Option(
                 help="Dataset root to write: a local path or a pyarrow URI (s3://...). "
                      "Existing partitions of the same dates are replaced.")],
             run_date: RunDateOpt("Last date written (default: yesterday).") = None,
             clusters: Annotated[int, typer.Option(
                 min=2, help="Clusters in the mixture (model.n_clusters of --config-out).")] = 10,
             seed: Annotated[int, typer.Option(
                 min=0, help="Seed: the same seed and sizes give the same rows.")] = 0,
             rows_per_group: Annotated[int, typer.Option(
                 min=1, help="Rows per Parquet row group, the unit generated and written at "
                             "a time (bounds memory).")] = 100_000,
             config_out: Annotated[Optional[Path], typer.Option(
                 dir_okay=False, help="Also write a pipeline config (YAML) for the table, so "
                                      "that `decflow run -c PATH` runs on it.")] = None):
    """Write a synthetic source table: a known mixture of clusters (4 numeric, 2 categorical
    and a 56-length vector feature, the true cluster in `cluster`), partitioned by date."""
    from decflow.config import dump_config
    from decflow.data.synthetic import generate_source, synthetic_config

    if rows < days:
        raise typer.BadParameter(f"--rows {rows} is fewer than --days {days}: every partition "
                                 "needs at least one row", param_hint="--rows")
    day = _date(run_date, "--run-date") or dt.date.today() - dt.timedelta(days=1)
    out = out_uri
    parts = generate_source(out, rows=rows, days=days, end_date=day, n_clusters=clusters,
                            seed=seed, rows_per_group=rows_per_group)
    for p in parts:
        typer.echo(f"{p.path}  {p.rows} rows")
    typer.echo(f"wrote {rows} rows in {len(parts)} partitions ({parts[0].day} .. "
               f"{parts[-1].day}) to {out}")
    if config_out is not None:
        # the table's absolute location, so the config works from any directory; the home
        # (stores) stays the usual ./.decflow of wherever `decflow run` is started
        uri = out if "://" in out else str(Path(out).resolve())
        config = synthetic_config(uri, n_clusters=clusters, window_days=days)
        config_out.parent.mkdir(parents=True, exist_ok=True)
        config_out.write_text(dump_config(config))
        typer.echo(f"wrote config {config_out} (source {uri}, window {days} days, "
                   f"{clusters} clusters)")


if __name__ == "__main__":
    app()
