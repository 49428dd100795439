"""Drift and churn over nights: how far tonight's clusters moved from last night's.

Two numbers per night, both in 0..1:

* **label churn**: the share of the training rows whose cluster id the new model (after its ids
  were aligned to the champion's) gives differently from the champion. 0 = the same
  clustering; it is logged by ``align_cluster_ids`` as the metric ``label_churn``.
* **size shift**: the total variation distance between tonight's cluster shares (the labels
  written tonight) and last night's (the newest earlier labels partition): half the sum of
  the absolute share differences, i.e. the share of rows that would have to move cluster to
  turn one size profile into the other. PSI (population stability index) is logged beside it
  for those used to it (0.1 / 0.25 are its usual "watch" / "act" marks).

``history`` reads the nights back from MLflow: one row per run date, the run that wrote it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from decflow.config import PipelineConfig
from decflow.data import partitioned
from decflow.files import atomic_path
from decflow.registry.names import Tag

PSI_EPSILON = 1e-4  # share floor in the PSI, so an empty cluster gives a finite value

HISTORY_COLUMNS = ["run_date", "status", "model_version", "champion_version", "promotion",
                   "rows", "label_churn", "size_shift_tvd", "size_shift_psi", "acc", "nmi",
                   "silhouette", "mean_confidence", "alert", "run_id"]


def shares(counts: dict, n_clusters: int) -> np.ndarray:
    """(k,) shares of cluster ids ``0..k-1`` from ``{id: rows}`` (ids outside are an error)."""
    out = np.zeros(n_clusters, dtype=np.float64)
    for cid, n in counts.items():
        if cid is None or not 0 <= int(cid) < n_clusters:
            raise ValueError(f"cluster id {cid!r} outside 0..{n_clusters - 1}")
        out[int(cid)] += n
    total = out.sum()
    if total <= 0:
        raise ValueError("no rows to compute cluster shares from")
    return out / total


def size_shift(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Total variation distance and PSI between two share vectors of the same k."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if before.shape != after.shape:
        raise ValueError(f"share vectors differ in length: {before.shape} vs {after.shape}")
    b, a = np.maximum(before, PSI_EPSILON), np.maximum(after, PSI_EPSILON)
    return {"tvd": float(0.5 * np.abs(after - before).sum()),
            "psi": float(((a - b) * np.log(a / b)).sum())}


@dataclass
class Drift:
    """One night's drift against last night and the champion, with the thresholds' verdict."""

    run_date: str
    n_clusters: int
    sizes: list[int]  # tonight's rows per cluster id (the labels written)
    previous_date: str | None = None  # the newest earlier labels partition, if any
    previous_sizes: list[int] | None = None
    label_churn: float | None = None  # vs the champion (None: no champion to compare with)
    size_shift_tvd: float | None = None  # None: no earlier night
    size_shift_psi: float | None = None
    max_churn: float | None = None
    max_size_shift: float | None = None
    alerts: list[str] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return bool(self.alerts)

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the night (only those that exist)."""
        out = {"size_shift_tvd": self.size_shift_tvd, "size_shift_psi": self.size_shift_psi,
               "drift_alert": float(self.alert)}
        return {k: float(v) for k, v in out.items() if v is not None}

    def to_dict(self) -> dict:
        return {**asdict(self), "alert": self.alert}

    def to_markdown(self) -> str:
        rows = [("label churn vs champion", self.label_churn, self.max_churn),
                ("size shift vs last night (TVD)", self.size_shift_tvd, self.max_size_shift),
                ("size shift vs last night (PSI)", self.size_shift_psi, None)]
        lines = "\n".join(f"| {name} | {_fmt(v)} | {_fmt(t)} |" for name, v, t in rows)
        head = ("### Drift: **alert**\n\n" + "".join(f"- {a}\n" for a in self.alerts)
                if self.alert else "### Drift: within thresholds\n")
        return (f"{head}\nNight {self.run_date} against "
                f"{self.previous_date or 'no earlier night'}.\n\n"
                f"| measure | value | threshold |\n|---|---|---|\n{lines}\n")


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4g}"


def measure_drift(run_date, sizes: dict, n_clusters: int, *, previous_date=None,
                  previous_sizes: dict | None = None, label_churn: float | None = None,
                  max_churn: float | None = None, max_size_shift: float | None = None
                  ) -> Drift:
    """Compare tonight's cluster sizes with last night's and check the thresholds.

    Args:
        sizes, previous_sizes: ``{cluster id: rows}`` (missing ids have 0 rows).
        label_churn: churn against the champion (None or NaN when there was none).
        max_churn, max_size_shift: thresholds (None: not checked). A value strictly above
            its threshold is an alert.
    """
    now = shares(sizes, n_clusters)
    drift = Drift(str(run_date), n_clusters,
                  [int(sizes.get(i, 0)) for i in range(n_clusters)],
                  max_churn=max_churn, max_size_shift=max_size_shift)
    if label_churn is not None and not math.isnan(label_churn):
        drift.label_churn = float(label_churn)
    if previous_sizes:
        drift.previous_date = str(previous_date)
        drift.previous_sizes = [int(previous_sizes.get(i, 0)) for i in range(n_clusters)]
        shift = size_shift(shares(previous_sizes, n_clusters), now)
        drift.size_shift_tvd, drift.size_shift_psi = shift["tvd"], shift["psi"]
    if max_churn is not None and drift.label_churn is not None \
            and drift.label_churn > max_churn:
        drift.alerts.append(f"label churn {drift.label_churn:.3f} exceeds "
                            f"monitoring.max_churn {max_churn:g}")
    if max_size_shift is not None and drift.size_shift_tvd is not None \
            and drift.size_shift_tvd > max_size_shift:
        drift.alerts.append(f"cluster-size shift {drift.size_shift_tvd:.3f} (TVD vs "
                            f"{drift.previous_date}) exceeds monitoring.max_size_shift "
                            f"{max_size_shift:g}")
    return drift


# ---------------------------------------------------------------------- history
def history(tracking_uri: str, experiment: str, *, days: int = 30, end=None,
            current_run_id: str | None = None) -> pd.DataFrame:
    """One row per night over the ``days`` nights ending at ``end`` (default: the newest
    night recorded), from the nightly ``recluster`` runs in MLflow.

    A night's row is its newest finished run (the one whose labels stand), else its newest run
    of any status (a failed night shows as failed); ``current_run_id`` (a run still in
    progress) always stands for its night. Columns: ``HISTORY_COLUMNS``, oldest night first;
    metrics a night did not log are NaN.
    """
    from decflow.registry.client import mlflow_client

    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    runs = _all_runs(client, exp.experiment_id)
    by_night: dict[str, object] = {}
    for run in runs:  # newest first
        night = run.data.tags.get(Tag.RUN_DATE)
        if not night:
            continue
        held = by_night.get(night)
        if run.info.run_id == current_run_id or held is None or (
                held.info.status != "FINISHED" and run.info.status == "FINISHED"
                and held.info.run_id != current_run_id):
            by_night[night] = run
    if not by_night:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    last = dt.date.fromisoformat(str(end)) if end is not None else \
        max(dt.date.fromisoformat(d) for d in by_night)
    first = last - dt.timedelta(days=days - 1)
    rows = []
    for night in sorted(by_night):
        if not first <= dt.date.fromisoformat(night) <= last:
            continue
        run = by_night[night]
        m, t = run.data.metrics, run.data.tags
        rows.append({"run_date": night,
                     "status": "RUNNING (this run)" if run.info.run_id == current_run_id
                     else run.info.status,
                     "model_version": t.get(Tag.MODEL_VERSION),
                     "champion_version": t.get(Tag.CHAMPION_VERSION),
                     "promotion": t.get(Tag.PROMOTION_DECISION),
                     "rows": m.get("labels_rows", math.nan),
                     **{k: m.get(k, math.nan) for k in ("label_churn", "size_shift_tvd",
                                                        "size_shift_psi", "acc", "nmi",
                                                        "silhouette", "mean_confidence")},
                     "alert": t.get(Tag.MONITORING_ALERT) == "true",
                     "run_id": run.info.run_id})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id],
                                  filter_string="tags.`decflow.flow` = 'recluster'",
                                  order_by=["attributes.start_time DESC"], max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def history_markdown(frame: pd.DataFrame) -> str:
    """The history as a Markdown table (the columns people read; run ids last)."""
    if frame.empty:
        return "No nightly runs recorded.\n"
    cols = [c for c in HISTORY_COLUMNS if c in frame]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        out.append("| " + " | ".join(cell_text(row[c]) for c in cols) + " |")
    return "\n".join(out) + "\n"


def cell_text(value, yes: str = "yes") -> str:
    """One history cell as text: "–" for missing/NaN, ``yes`` or "" for a flag, 4 significant
    digits (whole numbers >= 10 as integers)."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return yes if value else ""
    if isinstance(value, (float, np.floating)):
        return "–" if math.isnan(value) else (f"{value:.0f}" if float(value).is_integer()
                                              and abs(value) >= 10 else f"{value:.4g}")
    return str(value)


def night_drift(config: PipelineConfig, run_date: dt.date, n_clusters: int,
                label_churn: float | None) -> Drift:
    """The drift of the labels written for ``run_date`` against the newest earlier labels
    partition (sizes read from the ``cluster_id`` column alone) and the champion (``label_churn``),
    checked against ``monitoring.max_churn`` / ``max_size_shift``."""
    date_column, uri = config.source.date_column, config.labels_uri()
    tonight = partitioned.partition_counts(uri, date_column, run_date, "cluster_id") or {}
    earlier = [d for d in partitioned.list_partitions(uri, date_column) if d < run_date]
    previous = earlier[-1] if earlier else None
    before = partitioned.partition_counts(uri, date_column, previous, "cluster_id") \
        if previous else None
    k = max([n_clusters, *[int(c) + 1 for c in [*tonight, *(before or {})]]])
    mon = config.monitoring
    return measure_drift(run_date, tonight, k, previous_date=previous, previous_sizes=before,
                         label_churn=label_churn, max_churn=mon.max_churn,
                         max_size_shift=mon.max_size_shift)


# ---------------------------------------------------------------------- figures
def plot_sizes_vs_last_night(drift: Drift):
    """Rows per cluster tonight beside last night's (shares, so nights of different size
    compare), with the size shift in the title."""
    from matplotlib.figure import Figure

    k = drift.n_clusters
    now = np.asarray(drift.sizes, np.float64)
    fig = Figure(figsize=(max(5.5, 0.5 * k + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(k)
    if drift.previous_sizes is not None:
        before = np.asarray(drift.previous_sizes, np.float64)
        ax.bar(x - 0.2, before / before.sum(), width=0.4, color="tab:gray",
               label=f"last night ({drift.previous_date})")
        ax.bar(x + 0.2, now / now.sum(), width=0.4, color="tab:blue",
               label=f"tonight ({drift.run_date})")
        title = (f"cluster sizes: shift {drift.size_shift_tvd:.3f} (TVD), "
                 f"PSI {drift.size_shift_psi:.3f}")
    else:
        ax.bar(x, now / now.sum(), width=0.6, color="tab:blue",
               label=f"tonight ({drift.run_date})")
        title = "cluster sizes (no earlier night to compare with)"
    ax.set_xticks(x)
    ax.set_xlabel("cluster id")
    ax.set_ylabel("share of labelled rows")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


NOTHING_TO_COMPARE = ("nothing to compare yet: churn needs a champion's labels,\n"
                      "size shift needs an earlier night")


def plot_history(frame: pd.DataFrame, *, max_churn: float | None = None,
                 max_size_shift: float | None = None):
    """Label churn and size shift per night, with the thresholds as dashed lines and
    alert nights marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    if frame.empty:
        ax.text(0.5, 0.5, "no nights recorded", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    x = np.arange(len(frame))
    for col, colour, label, limit in (("label_churn", "tab:orange", "label churn vs champion",
                                       max_churn),
                                      ("size_shift_tvd", "tab:blue",
                                       "size shift vs last night (TVD)", max_size_shift)):
        y = frame[col].astype(float).to_numpy()
        ax.plot(x, y, marker="o", color=colour, label=label)
        if limit is not None:
            ax.axhline(limit, color=colour, linestyle="--", linewidth=1,
                       label=f"threshold {limit:g}")
    alerts = frame["alert"].to_numpy(bool)
    if alerts.any():
        ax.scatter(x[alerts], np.zeros(alerts.sum()), marker="^", color="tab:red", s=60,
                   label="alert", zorder=3)
    ax.set_xticks(x, frame["run_date"], rotation=45 if len(x) > 6 else 0, ha="right"
                  if len(x) > 6 else "center", fontsize="small")
    ax.set_ylim(bottom=0)
    if frame[["label_churn", "size_shift_tvd"]].astype(float).isna().all(axis=None):
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, NOTHING_TO_COMPARE, ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("share of rows (0..1)")
    ax.set_title(f"drift over the last {len(frame)} night(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def history_command(config: PipelineConfig, days: int | None = None, out: Path | None = None
                    ) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Read the nights back from MLflow and write ``history.csv``, ``history.md`` and
    ``drift_history.png`` under ``out`` (default ``<home>/reports``), each replaced whole.

    Returns:
        The table (one row per night, oldest first) and the paths written.
    """
    days = days or config.monitoring.history_days
    mon = config.monitoring
    frame = history(config.tracking_uri(), config.registry.experiment, days=days)
    out = Path(out) if out is not None else Path(config.home) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "history.csv", "markdown": out / "history.md",
             "chart": out / "drift_history.png"}
    fig = plot_history(frame, max_churn=mon.max_churn,
                                  max_size_shift=mon.max_size_shift)
    writers = {"csv": lambda p: frame.to_csv(p, index=False),
               "markdown": lambda p: Path(p).write_text(history_markdown(frame)),
               "chart": lambda p: fig.savefig(p, dpi=110, format="png")}
    for kind, path in paths.items():
        with atomic_path(path) as tmp:
            writers[kind](tmp)
    return frame, paths
