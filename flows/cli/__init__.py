"""The `decflow` command line (typer): ``app`` with every command group registered, in the
order `decflow --help` lists them. Exit codes and the one vocabulary of options:
``decflow.flows.cli.app``; shared options: ``decflow.flows.cli.options``."""

# isort: off
from decflow.flows.cli import nightly  # noqa: F401  (demo, run, validate, score, backfill, generate)
from decflow.flows.cli import models  # noqa: F401  (promote, rollback, adopt)
from decflow.flows.cli import results  # noqa: F401  (show-config, report, history, sweep-k)
from decflow.flows.cli import servers  # noqa: F401  (ui, serve, deploy)
# isort: on
from decflow.flows.cli.app import RENAMED, app, rename_options

__all__ = ["RENAMED", "app", "rename_options"]
