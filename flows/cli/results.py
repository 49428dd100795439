"""What the runs left: show-config, report, history, sweep-k."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from decflow.flows.cli.app import app
from decflow.flows.cli.options import ConfigOpt, RunDateOpt, SetOpt, date_option, load, setup


@app.command("show-config")
def show_config(config: ConfigOpt, sets: SetOpt = None):
    """Print the config a command would run with (file < DECFLOW_* environment < --set), as
    YAML with secrets redacted."""
    from decflow.config import dump_config

    typer.echo(dump_config(load(config, sets)), nl=False)


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
    cfg = setup(config, sets)

    from decflow.insight.report import report_command

    path = report_command(cfg, date_option(run_date, "--run-date"), run_id, out)
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
    cfg = setup(config, sets)

    from decflow.insight.sweep_report import sweep_k_command

    sweep_k_command(cfg, k, date_option(run_date, "--run-date"), seeds,
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
    cfg = setup(config, sets)

    from rich.console import Console
    from rich.table import Table

    from decflow.insight.monitoring import cell_text, history_command

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
