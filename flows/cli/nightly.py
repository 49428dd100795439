"""The night's commands: demo, run, validate, score, backfill, and generate (a synthetic source)."""

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from decflow.errors import PartitionsFailed
from decflow.flows.cli.app import app
from decflow.flows.cli.options import (
                                       ConfigOpt,
                                       HomeOpt,
                                       ModelOpt,
                                       RunDateOpt,
                                       SetOpt,
                                       date_option,
                                       print_run,
                                       quiet_environment,
                                       require_model,
                                       setup,
                                       state,
                                       )
from decflow.flows.cli.prefect_server import start_prefect_server


def refuse_if_night_held(config, day: dt.date | None) -> None:
    """``Conflict`` (exit 5) before anything starts when another run of this home is writing the
    night's labels (its lock, see ``tasks.runtime.night_lock``): the refused run starts no Dask
    cluster, whose workers it would only stop again. ``day`` None: yesterday, the flow's default
    outside a deployment. The flow takes the lock itself (and the Prefect server's slot, which
    refuses runs of other homes) when it starts."""
    from decflow import locks

    day = day or dt.date.today() - dt.timedelta(days=1)
    locks.refuse_if_held(config.home, *locks.night(config.source.date_column, day.isoformat()))


def run_cluster(config, *, training: bool = True):
    """The command's one Dask cluster (``engine.compute.run_cluster``), started now: its
    workers start and warm up (for scoring only, unless ``training``) while the flow starts
    Prefect's server; the flow joins it."""
    from decflow.engine.compute import WARM_ALL, WARM_SCORING, run_cluster as shared

    return shared(config.compute, warm=WARM_ALL if training else WARM_SCORING)


@app.command()
def demo(home: HomeOpt = Path(".decflow"),
         run_date: RunDateOpt("Last of the 3 demo dates and the run date (default: "
                              "yesterday).") = None,
         pretrain_epochs: Annotated[Optional[int], typer.Option(
             help="Override pretraining epochs (default: the shipped 'auto' budget).")] = None):
    """Write scikit-learn's digits as a 3-day source table under HOME and run `recluster` on it
    with embedded MLflow (sqlite), Prefect (ephemeral) and Dask (LocalCluster)."""
    state["home"] = str(home)
    quiet_environment(home)
    from decflow.data.demo import demo_config, write_demo_source
    from decflow.flows.recluster import recluster, yesterday

    day = date_option(run_date, "--run-date") or yesterday()
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
    with run_cluster(config):  # starts while the flow starts Prefect's server
        out = recluster(config=config, run_date=day, progress=sys.stderr.isatty())
    print_run(out, config, last_words)


@app.command()
def run(config: ConfigOpt,
        run_date: RunDateOpt("Date to label; the training window ends here (default: "
                             "yesterday).") = None,
        sets: SetOpt = None):
    """Run the nightly `recluster` flow once: validate, train, register, write labels."""
    cfg = setup(config, sets)
    day = date_option(run_date, "--run-date")
    refuse_if_night_held(cfg, day)
    server = start_prefect_server()  # first: it starts beside all that follows
    with run_cluster(cfg):  # starts while the flow is imported
        from decflow.flows.recluster import recluster

        server()
        out = recluster(config=cfg, run_date=day, progress=sys.stderr.isatty())
    print_run(out, cfg)


@app.command()
def validate(config: ConfigOpt,
             run_date: RunDateOpt("Partition to check (default: yesterday).") = None,
             window: Annotated[bool, typer.Option(
                 help="Check the whole training window ending at --run-date instead of one "
                      "partition.")] = False,
             sets: SetOpt = None):
    """Run the data checks only; exit code 1 when an expectation fails."""
    cfg = setup(config, sets)

    from decflow.data import sources
    from decflow.engine import partitions as scoring
    from decflow.engine.compute import dask_client
    from decflow.flows.recluster import yesterday

    day = date_option(run_date, "--run-date") or yesterday()
    scan = sources.scan_night(cfg.source, day, None if window else 1,
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
    cfg = setup(config, sets)
    day = date_option(run_date, "--run-date")
    refuse_if_night_held(cfg, day)
    server = start_prefect_server()  # first: it starts beside all that follows
    with run_cluster(cfg, training=False):  # starts while the model is checked
        require_model(cfg, model)

        from decflow.flows.score import score as score_flow

        server()
        out = score_flow(config=cfg, run_date=day, model=model)
    typer.echo(f"wrote {out['rows']} labels to {out['path']} with model version "
               f"{out['model_version']}")


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
    cfg = setup(config, sets)
    d1, d2 = date_option(start, "--start"), date_option(end, "--end")
    if d2 < d1:
        raise typer.BadParameter(f"--end {d2} is before --start {d1}", param_hint="--end")
    if retrain and (model != "champion" or force):
        raise typer.BadParameter("--retrain trains a new model for each date and always runs; "
                                 "--model and --force do not apply", param_hint="--retrain")
    try:
        server = start_prefect_server()  # first: it starts beside all that follows
        with run_cluster(cfg, training=retrain):  # starts while the flow is imported
            if not retrain:
                require_model(cfg, model)

            from decflow.flows.backfill import backfill as backfill_flow

            server()
            rows = backfill_flow(config=cfg, start=d1, end=d2, model=model, force=force,
                                 retrain=retrain)
    except PartitionsFailed as exc:  # the flow's BackfillFailed, with one row per date
        if not hasattr(exc, "rows"):
            raise
        typer.echo(str(exc))
        failed = [r for r in exc.rows if r["status"] == "failed"]
        # only nights another run is writing: a conflict (5), retry later; else data (1)
        raise typer.Exit(5 if all(r["detail"].startswith("Conflict:") for r in failed) else 1)
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
    day = date_option(run_date, "--run-date") or dt.date.today() - dt.timedelta(days=1)
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
