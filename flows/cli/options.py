"""Options and helpers every command group shares: the config, --set, --home, the run date, the
model reference, the schedule; loading a config and the quiet environment before Prefect.
"""

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

# Where an internal error's traceback goes: the home of the config the command loaded (set by
# load and the --home commands; reset for every invocation).
state: dict[str, Any] = {"home": None}


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


def date_option(value: Optional[str], name: str) -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name)


def quiet_environment(home: Path | str | None = None) -> None:
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


def setup(config: Path, sets: list[str] | None = None):
    """The config, then the environment for its home (before Prefect is imported)."""
    cfg = load(config, sets)
    quiet_environment(cfg.home)
    return cfg


def require_model(cfg, ref: str) -> None:
    """Every command given a model reference checks it first, the same way (``ConfigError``:
    exit code 2 naming the model, the reference and the store), before any flow starts."""
    from decflow.registry.versions import require_version

    require_version(cfg.tracking_uri(), cfg.registry.model_name, ref)


def load(config: Path, sets: list[str] | None = None):
    """The config file < ``DECFLOW_*`` environment < ``--set`` items (a ``ConfigError``, exit
    code 2, names each bad key and where it was set); its home receives the traceback of an
    internal error."""
    from decflow.config import load_config, parse_overrides

    cfg = load_config(config, parse_overrides(sets), overrides_from="--set")
    state["home"] = cfg.home
    return cfg


def print_run(result: dict, config, last_words: list[str] | None = None) -> None:
    """Print the run's summary table and the path of its HTML report; with ``last_words`` the
    report's line is appended there instead (``demo`` prints it at exit, after Prefect's
    temporary server has said it stopped, so it is the output's last line)."""
    from rich.console import Console
    from rich.table import Table

    from decflow.redaction import redact

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


def cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
