"""The registry's commands: promote (gate a candidate), rollback, adopt."""

from typing import Annotated

import typer

from decflow.flows.cli.app import app
from decflow.flows.cli.options import (
                                       ConfigOpt,
                                       ModelOpt,
                                       RunDateOpt,
                                       SetOpt,
                                       cell,
                                       date_option,
                                       require_model,
                                       setup,
                                       )


@app.command()
def promote(config: ConfigOpt,
            model: ModelOpt("Registered version number or alias to gate.") = "challenger",
            run_date: RunDateOpt("Compare both models on this partition instead of the window "
                                 "the candidate was trained on.") = None,
            sets: SetOpt = None):
    """Gate a candidate against the champion on the same rows; promote it when every gate
    passes (champion <- candidate, previous <- old champion). Exit code 1 when rejected."""
    cfg = setup(config, sets)

    from rich.console import Console
    from rich.table import Table

    from decflow.flows.promote import promote as promote_flow

    day = date_option(run_date, "--run-date")
    require_model(cfg, model)
    out = promote_flow(config=cfg, candidate=model, run_date=day)
    table = Table(title=f"promotion of {cfg.registry.model_name} version {out['candidate']}")
    for col in ("gate", "result", "value", "threshold", "detail"):
        table.add_column(col)
    for g in out["gates"]:
        table.add_row(g["name"], "pass" if g["passed"] else "FAIL", cell(g["value"]),
                      cell(g["threshold"]), g["detail"])
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
    cfg = setup(config, sets)

    from decflow.registry.versions import adopt_version

    out = adopt_version(cfg.tracking_uri(), cfg.registry.model_name, model)
    typer.echo(f"model {cfg.registry.model_name!r} version {out['version']}: recorded the "
               f"sha256 of its {out['files']} files (manifest sha256 "
               f"{out['manifest_sha256']}); decflow verifies them before every load")


@app.command()
def rollback(config: ConfigOpt, sets: SetOpt = None):
    """Swap champion and previous: the previous champion serves labels again."""
    cfg = setup(config, sets)

    from decflow.errors import ConfigError, DataError
    from decflow.redaction import redact
    from decflow.flows.promote import rollback as rollback_flow

    try:
        out = rollback_flow(config=cfg)
    except (ConfigError, DataError):
        raise  # their own exit codes
    except ValueError as exc:  # nothing to roll back to
        typer.echo(redact(str(exc)), err=True)
        raise typer.Exit(1)
    typer.echo(f"{cfg.registry.model_name}: champion is version {out['restored']} again; "
               f"version {out['demoted']} is now 'previous'")


@app.command("serve-model")
def serve_model(config: ConfigOpt,
                model: ModelOpt("Registered version number or alias to serve (resolved once, "
                                "at start: restart after a promotion).") = "champion",
                host: Annotated[str, typer.Option(
                    help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
                port: Annotated[int, typer.Option(min=1, max=65535)] = 5001,
                workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
                sets: SetOpt = None):
    """Answer HTTP requests with a registered model: `mlflow models serve` of its verified copy.

    POST /invocations with {"dataframe_split": {"columns": [...], "data": [...]}} (the
    source's feature columns) answers {"predictions": [{"cluster_id", "confidence",
    "distance"}, ...]}, as the nightly labels. Every file of the version is checked against
    the digests recorded when it was registered first (exit code 1 if one differs), and the
    copy checked is the one served. Serving runs the model's stored code (its pyfunc file and
    the decflow package bundled with it) in this environment: no virtualenv is built and
    nothing is downloaded."""
    import os
    import shutil
    import sys
    from pathlib import Path

    cfg = setup(config, sets)
    require_model(cfg, model)
    from decflow.redaction import redact
    from decflow.registry.versions import download_verified, require_version

    name, uri = cfg.registry.model_name, cfg.tracking_uri()
    version = str(require_version(uri, name, model).version)
    target = Path(cfg.home) / "serving" / f"{name}-v{version}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    local = download_verified(uri, name, version, str(target))
    bin_dir = Path(sys.executable).parent
    typer.echo(f"serving {name} version {version} ({model}), verified, from {local} on "
               f"http://{host}:{port}/invocations (model registry {redact(uri)})")
    # MLflow starts uvicorn from PATH: this environment's first
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(local), "--env-manager",
            "local", "--host", host, "--port", str(port), "--workers", str(workers)]
    sys.stdout.flush()
    os.execve(argv[0], argv, env)
