"""The servers' commands: ui (MLflow and Prefect UIs), serve and deploy (the deployments)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from decflow.flows.cli.app import app
from decflow.flows.cli.options import (
                                       ConfigOpt,
                                       CronOpt,
                                       OptionalConfigOpt,
                                       SetOpt,
                                       TimezoneOpt,
                                       load,
                                       quiet_environment,
                                       state,
                                       )


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
        cfg = load(config, sets)
    else:
        from decflow.config import load_config, parse_overrides

        cfg = load_config(None, {"home": str(home or ".decflow"), **parse_overrides(sets)},
                          env={}, overrides_from="--set")
    state["home"] = cfg.home
    quiet_environment(cfg.home)
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
    quiet_environment()
    from prefect import serve as serve_deployments
    from prefect.settings import get_current_settings

    from decflow.flows.deployments import build_deployments

    if not get_current_settings().api.url:
        typer.echo("decflow serve needs a Prefect server (an ephemeral one has no scheduler): "
                   "start one with `decflow ui` or `prefect server start`, then set "
                   "PREFECT_API_URL=http://127.0.0.1:4200/api", err=True)
        raise typer.Exit(2)
    try:
        deployments = build_deployments(load(config, sets), cron=cron, timezone=timezone)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config")
    serve_deployments(*deployments)


@app.command()
def deploy(config: ConfigOpt,
           work_pool: Annotated[str, typer.Option(
               help="Work pool whose workers run the flows (created as a process pool when "
                    "missing).")] = "decflow",
           timezone: TimezoneOpt = None, cron: CronOpt = None,
           notify: Annotated[Optional[list[str]], typer.Option(
               "--notify", metavar="URL|block:TYPE/NAME",
               help="Where to send a message for a failed night, a drift alert or a crashed "
                    "run (repeatable): a webhook URL, or a Prefect notification block, e.g. "
                    "block:slack-webhook/ops. Without it, notifications already set up stay "
                    "as they are.")] = None,
           crash_after: Annotated[int, typer.Option(
               min=60, help="Seconds without a heartbeat (runs send one every 30 s) after "
                            "which the server sets a deployed run CRASHED.")] = 120,
           sets: SetOpt = None):
    """Create or update the `recluster/nightly`, `backfill/on-demand` and `promote/on-demand`
    deployments on the Prefect server (PREFECT_API_URL) with this config as their `config`
    parameter; a worker of the pool runs them (`prefect worker start --pool decflow`).
    Also the server's automations: a deployed run whose heartbeats stop is set CRASHED, and
    with --notify, messages when a night fails, drifts or crashes.

    Local relative paths in the config are made absolute. Secrets must not be in the config:
    the worker's environment supplies them, and its DECFLOW_* variables override the config in
    every deployed run."""
    cfg = load(config, sets)
    quiet_environment()
    from prefect.settings import get_current_settings

    from decflow.flows.deployments import absolute_paths
    from decflow.flows.deployments import deploy as deploy_flows
    from decflow.flows.notifications import BadTarget

    if not get_current_settings().api.url:
        typer.echo("decflow deploy needs a Prefect server: set PREFECT_API_URL, e.g. "
                   "http://127.0.0.1:4200/api (`decflow ui` or `prefect server start`)",
                   err=True)
        raise typer.Exit(2)
    try:
        names, created, automations = deploy_flows(
            absolute_paths(cfg, str(Path.cwd())), work_pool, cron=cron, timezone=timezone,
            notify=notify, crash_after_s=crash_after)
    except BadTarget as exc:
        raise typer.BadParameter(str(exc), param_hint="--notify")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config")
    if created:
        typer.echo(f"created work pool {work_pool!r} (type process)")
    for name in names:
        typer.echo(f"deployed {name} on work pool {work_pool!r}")
    for line in automations:
        typer.echo(line)
    typer.echo(f"start a worker where the project is installed: "
               f"prefect worker start --pool {work_pool}")
