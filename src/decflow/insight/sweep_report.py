"""What `decflow sweep-k` gives its user: the sweep run over candidate k, its table, chart and
recommendation written as three files and printed (``decflow.insight.sweep`` explains the proxy
and the rule).

It reads the source and writes three files under ``out``, and registers, tracks and labels
nothing, so it needs no server and leaves nothing for the nightly's stores.
"""

import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

from decflow.config import PipelineConfig
from decflow.errors import ConfigError
from decflow.files import replace_durably
from decflow.insight.sweep import SweepResult, parse_k_range, run_sweep

FILES = ("sweep_k.json", "sweep_k.md", "sweep_k.png")


def sweep_k_command(config: PipelineConfig, ks: str, run_date: dt.date | None, seeds: int,
                    out: Path, pretrain_epochs: int | None) -> SweepResult:
    """Sweep ``ks`` (e.g. "4..16"), write ``out/sweep_k.{json,md,png}``, print the table.

    Raises:
        ConfigError: a bad k range, fewer than 2 seeds or fewer than 1 pretraining epoch
            (checked before any data is read).
    """
    try:
        k_list = parse_k_range(ks)
    except ValueError as exc:
        raise ConfigError(f"--k: {exc}") from None
    if seeds < 2:
        raise ConfigError(f"--seeds: expected an integer >= 2 (stability compares restarts), "
                          f"found {seeds}")
    if pretrain_epochs is not None and pretrain_epochs < 1:
        raise ConfigError(f"--pretrain-epochs: expected an integer >= 1, found "
                          f"{pretrain_epochs}")
    result = run_sweep(config, k_list, run_date=run_date, seeds=seeds,
                       pretrain_epochs=pretrain_epochs, progress=_progress)
    paths = write_sweep(result, Path(out))
    print_sweep(result, paths)
    return result


def write_sweep(result: SweepResult, out: Path) -> list[Path]:
    """All three files are written to a temporary folder beside them first, then moved in:
    a failure while writing leaves none of them (earlier ones from another sweep stay)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".sweep_k-"))
    try:
        (tmp / FILES[0]).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        (tmp / FILES[1]).write_text(result.to_markdown())
        result.plot().savefig(tmp / FILES[2], dpi=110)
        for name in FILES:
            replace_durably(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / name for name in FILES]


def print_sweep(result: SweepResult, paths: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    ctx = result.context
    table = Table(title=f"k sweep: {result.n_rows} rows of {ctx.get('window', 'the window')}, "
                        f"{len(result.seeds)} seeds")
    frame = result.to_frame()
    for col in frame.columns:
        table.add_column(col, justify="right")
    for row in frame.itertuples(index=False):
        style = "bold green" if row.k == result.recommended else None
        table.add_row(str(int(row.k)), *(f"{v:.3f}" for v in row[1:]), style=style)
    console = Console()
    console.print(table)
    console.print(result.reason, markup=False)
    if "configured_k" in ctx:
        console.print(f"(the config has model.n_clusters={ctx['configured_k']}; pretrained "
                      f"{ctx['pretrain_epochs']} epochs"
                      f"{', overridden' if ctx['pretrain_epochs_overridden'] else ''}; "
                      f"{result.timings.get('total', 0):.0f} s)", markup=False)
    console.print("wrote " + ", ".join(str(p) for p in paths), markup=False)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
