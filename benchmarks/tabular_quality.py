"""Quality on plain tables: the nightly `recluster` flow with the default config on labelled
tabular sets, beside the baselines a user would write, in one run.

Each set is written as a one-date source table (`id`, its columns as they come, the class as
`class`), declared as a user would (number columns `numeric`, text-valued columns
`categorical`) and run through the flow with the default config: only the source, the
feature columns, k = the number of classes and the seed are set. The written labels are
scored against the class (ACC with Hungarian matching, NMI, ARI). In the same run, on the
same rows:

- k-means (10 restarts), a full-covariance Gaussian mixture (10 restarts) and UMAP to 10
  dimensions + that mixture, on standardised numeric columns (one-hot for categorical ones);
- the estimator alone (`DeepEmbeddedClustering(n_clusters=k, random_state=seed)`) on the rows
  the flow's feature encoder makes (skipped where the flow trains on a sample: KDD Cup 99).

Labels are used for scoring only. The data sets are read from ../shared/data/*.csv.gz
(development data beside the repository) and skipped with a message when absent.

    python benchmarks/tabular_quality.py                                   # Dry Bean, Letter; seeds 0,1,2
    python benchmarks/tabular_quality.py --datasets kdd --seeds 0 --methods pipeline k-means "UMAP + GMM" \
        --out benchmarks/results/tabular_quality_kdd
    python benchmarks/tabular_quality.py --datasets kdd --seeds 0 --methods GMM --baseline-restarts 1 \
        --append --out benchmarks/results/tabular_quality_kdd   # scikit-learn's default n_init

KDD Cup 99 is also a scale case (494,021 rows; the flow trains on a 200,000-row sample):
each row records its wall time, and the flow's rows the peak RSS of every process of the run
(the flow's process and its Dask workers, sampled every 0.2 s). Run it alone. There the
full-covariance mixture (on 494,021 rows x 120 columns) runs once, scikit-learn's default,
instead of 10 times: its time per fit is in the results.
Writes <out>.json and <out>.md (default benchmarks/results/tabular_quality), again after every
row, so a run stopped part-way keeps the rows it finished.
"""

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from decflow.environment import quiet_defaults  # noqa: E402

quiet_defaults()

from results_file import stamped, write_results  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
FILES = {"drybean": "drybean.csv.gz", "letter": "letter.csv.gz", "kdd": "kddcup99_10pct.csv.gz"}
NAMES = {"drybean": "Dry Bean", "letter": "Letter", "kdd": "KDD Cup 99 (10%)"}
RUN_DATE = dt.date(2026, 1, 1)
GiB = 2**30


def load(name: str):
    """(feature frame, class labels as strings, numeric columns, categorical columns)."""
    import pandas as pd

    frame = pd.read_csv(DATA / FILES[name])
    y = frame.pop("class").astype(str).to_numpy()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in frame.columns if c not in numeric]
    return frame, y, numeric, categorical


def standardised(frame, numeric, categorical) -> np.ndarray:
    """What a user feeds a baseline: z-scored numeric columns, one-hot categorical ones."""
    import pandas as pd

    num = frame[numeric].astype(float)
    std = num.std(ddof=0).replace(0, 1)
    parts = [((num - num.mean()) / std).to_numpy()]
    if categorical:
        parts.append(pd.get_dummies(frame[categorical].astype(str)).to_numpy(dtype=float))
    return np.hstack(parts).astype(np.float32)


# ------------------------------------------------------------------------------ baselines
def run_kmeans(X, y, seed, n_init):
    from sklearn.cluster import KMeans

    t = time.perf_counter()
    labels = KMeans(len(np.unique(y)), n_init=n_init, random_state=seed).fit_predict(X)
    return labels, time.perf_counter() - t, {}


def run_gmm(X, y, seed, n_init):
    """scikit-learn's mixture with its default regularisation; where that fails (constant or
    duplicated columns, e.g. KDD Cup 99: "ill-defined empirical covariance"), once more with
    reg_covar 1e-3, as a user would, and the row says so."""
    from sklearn.mixture import GaussianMixture

    t = time.perf_counter()
    extra = {}
    for reg_covar in (1e-6, 1e-3):
        try:
            labels = GaussianMixture(len(np.unique(y)), covariance_type="full", n_init=n_init,
                                     reg_covar=reg_covar, random_state=seed).fit(X).predict(X)
            break
        except ValueError as exc:
            if reg_covar == 1e-3 or "ill-defined empirical covariance" not in str(exc):
                raise
            extra = {"reg_covar": 1e-3, "note": "default reg_covar 1e-6 failed: ill-defined "
                                                "empirical covariance"}
    return labels, time.perf_counter() - t, extra


def run_umap_gmm(X, y, seed, n_init):
    import umap

    t = time.perf_counter()
    M = umap.UMAP(n_components=10, random_state=seed).fit_transform(X)
    labels, _, extra = run_gmm(M, y, seed, n_init)
    return labels, time.perf_counter() - t, extra


BASELINES = {"k-means": run_kmeans, "GMM": run_gmm, "UMAP + GMM": run_umap_gmm}


# ------------------------------------------------------------------------------ decflow
def write_source(uri: str, frame, y) -> None:
    import pyarrow as pa

    from decflow.data.partitioned import write_partition

    table = pa.Table.from_pandas(frame.assign(id=np.arange(len(frame), dtype=np.int64),
                                              **{"class": y}), preserve_index=False)
    write_partition(uri, "ds", RUN_DATE, table)


def pipeline_config(home: str, uri: str, numeric, categorical, k: int, seed: int):
    from decflow.config import PipelineConfig

    return PipelineConfig.model_validate({
        "home": home,
        "source": {"uri": uri, "id_column": "id", "label_column": "class", "window_days": 1},
        "features": {"numeric": numeric, "categorical": categorical},
        "model": {"n_clusters": k},
        "train": {"random_state": seed}})


def run_pipeline(frame, y, numeric, categorical, seed: int) -> dict:
    import pandas as pd
    from mlflow import MlflowClient

    from decflow.data.partitioned import read_partition
    from decflow.errors import Rejected
    from decflow.model.metrics import supervised_scores
    from decflow.flows.recluster import recluster
    from scale import RssSampler

    k = len(np.unique(y))
    with tempfile.TemporaryDirectory(prefix="decflow-tq-") as home:
        uri = str(Path(home) / "source")
        write_source(uri, frame, y)
        config = pipeline_config(home, uri, numeric, categorical, k, seed)
        t = time.perf_counter()
        with RssSampler(os.getpid()) as rss:
            try:
                result = recluster(config=config, run_date=RUN_DATE)
            except Rejected as exc:  # a first version rejected by the gates labels nothing
                result = {"error": str(exc)[:300]}
        wall = time.perf_counter() - t
        memory = rss.summary()
        client = MlflowClient(config.tracking_uri())
        exp = client.get_experiment_by_name(config.registry.experiment)
        run = client.search_runs([exp.experiment_id], max_results=1)[0]
        m, tags = run.data.metrics, run.data.tags
        out = {"seconds": wall, "peak_rss_max_process_gib": memory["peak_max_process_bytes"] / GiB,
               "peak_rss_sum_gib": memory["peak_sum_bytes"] / GiB,
               "processes": len(memory["processes"]),
               "seconds_pretrain": m.get("seconds_pretrain"), "seconds_init": m.get("seconds_init"),
               "seconds_finetune": m.get("seconds_finetune"),
               "view_space": tags.get("decflow.init_view_space"),
               "input_dimension": m.get("input_dimension"),
               "training_rows": min(len(frame), config.train.max_train_rows)}
        if "error" in result:
            return {**out, "acc": m.get("acc"), "nmi": m.get("nmi"), "ari": m.get("ari"),
                    "rows": 0, "promotion": "failed: " + result["error"],
                    "scored_on": "training rows (no labels written)"}
        labels = read_partition(config.labels_uri(), "ds", RUN_DATE)
        truth = pd.Series(y, index=np.arange(len(y)))
        scores = supervised_scores(truth.loc[labels["id"]].to_numpy(),
                                   labels["cluster_id"].to_numpy())
        return {**scores, **out, "rows": int(len(labels)),
                "promotion": (result["promotion"] or {}).get("decision"),
                "scored_on": "written labels"}


def run_estimator(frame, y, numeric, categorical, seed: int) -> dict:
    from decflow.config import FeaturesConfig
    from decflow.model.estimator import DeepEmbeddedClustering
    from decflow.model.features import FeatureEncoder
    from decflow.model.metrics import supervised_scores

    X = FeatureEncoder(FeaturesConfig(numeric=numeric, categorical=categorical)
                       ).fit_transform(frame)
    t = time.perf_counter()
    est = DeepEmbeddedClustering(n_clusters=len(np.unique(y)), random_state=seed).fit(X)
    return {**supervised_scores(y, est.labels_), "seconds": time.perf_counter() - t,
            "seconds_pretrain": est.timings_.get("pretrain"), "view_space": est.view_space_,
            "input_dimension": est.input_dimension_}


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["drybean", "letter"], choices=list(FILES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["pipeline", "estimator", *BASELINES],
                    choices=["pipeline", "estimator", *BASELINES])
    ap.add_argument("--baseline-restarts", type=int, default=10,
                    help="restarts of k-means and of the Gaussian mixtures (default 10)")
    ap.add_argument("--max-estimator-rows", type=int, default=200_000,
                    help="skip the estimator row above this many rows (the flow samples "
                         "train.max_train_rows, 200,000, and scores the rest)")
    ap.add_argument("--out", default=str(HERE / "results" / "tabular_quality"))
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in <out>.json and add this run's (e.g. one "
                         "baseline run again with other restarts); each row records its own "
                         "settings")
    args = ap.parse_args(argv)

    from decflow.model.metrics import supervised_scores

    rows, skipped, sets = [], [], {}
    if args.append and Path(args.out + ".json").exists():
        before = json.loads(Path(args.out + ".json").read_text())
        rows, skipped, sets = before["rows"], before["skipped"], before["datasets"]
    for name in args.datasets:
        if not (DATA / FILES[name]).exists():
            msg = f"{name}: skipped, {DATA / FILES[name]} not found (development data beside " \
                  f"the repository)"
            print(msg, flush=True)
            skipped.append(msg)
            continue
        frame, y, numeric, categorical = load(name)
        sets[name] = {"rows": len(frame), "numeric": len(numeric),
                      "categorical": len(categorical), "classes": int(len(np.unique(y)))}
        X = standardised(frame, numeric, categorical) if set(BASELINES) & set(args.methods) \
            else None
        for seed in args.seeds:
            for method in args.methods:
                if method == "estimator" and len(frame) > args.max_estimator_rows:
                    msg = (f"{name}: estimator row skipped, {len(frame)} rows > "
                           f"--max-estimator-rows {args.max_estimator_rows}")
                    if msg not in skipped:
                        skipped.append(msg)
                    continue
                if method == "pipeline":
                    r = run_pipeline(frame, y, numeric, categorical, seed)
                elif method == "estimator":
                    r = run_estimator(frame, y, numeric, categorical, seed)
                else:
                    labels, wall, extra = BASELINES[method](X, y, seed,
                                                            args.baseline_restarts)
                    r = {**supervised_scores(y, labels), "seconds": wall,
                         "restarts": args.baseline_restarts, **extra}
                r = {"dataset": name, "method": method, "seed": seed, **r}
                rows.append(r)
                print(json.dumps(r), flush=True)
                # after every row: a long run (KDD Cup 99) stopped part-way keeps what it measured
                out = stamped(args, rows=rows, skipped=skipped, datasets=sets)
                write_results(args.out, out, to_markdown(out))
    out = stamped(args, rows=rows, skipped=skipped, datasets=sets)
    write_results(args.out, out, to_markdown(out))
    return 0


def summary(rows: list[dict]) -> dict:
    """{(dataset, method): {"acc": [...], "nmi": [...], "ari": [...], "seconds": [...]}}."""
    groups: dict = {}
    for r in rows:
        g = groups.setdefault((r["dataset"], r["method"]), {"acc": [], "nmi": [], "ari": [],
                                                            "seconds": []})
        for key in g:
            if r.get(key) is not None:
                g[key].append(r[key])
    return groups


def _settings(row: dict) -> str:
    """A baseline row's restarts and note."""
    parts = [f"{row['restarts']} restarts" if row.get("restarts") else "", row.get("note") or ""]
    return "; ".join(p for p in parts if p)


def to_markdown(out: dict) -> str:
    groups = summary(out["rows"])
    lines = ["# Quality on plain tables", "",
             f"{out['when']}, {out['machine']}; the flow with the default config, baselines "
             f"on standardised columns (one-hot categorical), labels for scoring only.", "",
             "## Mean over seeds (min)", "",
             "| data set | method | seeds | ACC | NMI | ARI | wall s (mean) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (d, method), g in groups.items():
        cells = [f"{np.mean(g[k]):.4f} ({min(g[k]):.4f})" if g[k] else "" for k in
                 ("acc", "nmi", "ari")]
        lines.append(f"| {NAMES.get(d, d)} | {method} | {len(g['acc'])} | {' | '.join(cells)} "
                     f"| {np.mean(g['seconds']):.0f} |")
    lines += ["", "## Against the best baseline of the same run", "",
              "| data set | best baseline (ACC) | its ACC / NMI | pipeline ACC / NMI | "
              "pipeline min ACC / NMI | pipeline - best |", "|---|---|---|---|---|---|"]
    for d in dict.fromkeys(r["dataset"] for r in out["rows"]):
        base = {m: g for (dd, m), g in groups.items() if dd == d and m in BASELINES and g["acc"]}
        pipe = groups.get((d, "pipeline"))
        if not base or not pipe or not pipe["acc"]:
            continue
        best = max(base, key=lambda m: np.mean(base[m]["acc"]))
        b, p = base[best], pipe
        lines.append(
            f"| {NAMES.get(d, d)} | {best} | {np.mean(b['acc']):.4f} / {np.mean(b['nmi']):.4f} "
            f"| {np.mean(p['acc']):.4f} / {np.mean(p['nmi']):.4f} "
            f"| {min(p['acc']):.4f} / {min(p['nmi']):.4f} "
            f"| {np.mean(p['acc']) - np.mean(b['acc']):+.4f} / "
            f"{np.mean(p['nmi']) - np.mean(b['nmi']):+.4f} |")
    lines += ["", "## Every row", "",
              "| data set | method | seed | ACC | NMI | ARI | wall s | pretrain s | views of | "
              "peak RSS max/process GiB | promotion / note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in out["rows"]:
        def f(key, spec):
            v = r.get(key)
            return "" if v is None else format(v, spec)
        lines.append(f"| {NAMES.get(r['dataset'], r['dataset'])} | {r['method']} | {r['seed']} "
                     f"| {f('acc', '.4f')} | {f('nmi', '.4f')} | {f('ari', '.4f')} "
                     f"| {f('seconds', '.0f')} | {f('seconds_pretrain', '.0f')} "
                     f"| {r.get('view_space') or ''} | {f('peak_rss_max_process_gib', '.2f')} "
                     f"| {r.get('promotion') or _settings(r)} |")
    lines += [""] + [f"- {s}" for s in out["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
