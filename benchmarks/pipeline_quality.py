"""Quality through the pipeline: the nightly `recluster` flow with the default config, scored on
the labels it writes, beside the estimator alone on the same rows.

Each development set is written as a one-date source table, either as one `vector` column or
as one `numeric` column per feature; the flow runs with the default config (only the source,
the feature columns and the seed set), and its written labels are joined to the truth. The
estimator row is `DeepEmbeddedClustering(n_clusters=k, random_state=seed).fit(X)` on the same
X. Labels are used for scoring only.

    python benchmarks/pipeline_quality.py                                 # digits + USPS, both kinds, seeds 0,1,2
    python benchmarks/pipeline_quality.py --datasets digits --kinds numeric --seeds 0

Writes benchmarks/results/pipeline_quality.{json,md} (or --out). USPS is read from
../shared/data/usps.h5 and skipped with a message when absent.
"""

import argparse
import datetime as dt
import json
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

from quality import USPS, load  # noqa: E402
from results_file import stamped, write_results  # noqa: E402

RUN_DATE = dt.date(2026, 1, 1)


def write_source(uri: str, X: np.ndarray, y: np.ndarray, kind: str) -> list[str]:
    """One partition: `id`, the truth `digit`, and the features as one vector column `pixels`
    or as numeric columns `p000`..; returns the feature column names."""
    import pyarrow as pa

    from decflow.data.partitioned import write_partition

    cols = {"id": pa.array(np.arange(len(X), dtype=np.int64)),
            "digit": pa.array(y.astype(np.int64))}
    if kind == "vector":
        cols["pixels"] = pa.FixedSizeListArray.from_arrays(
            pa.array(X.astype(np.float32).ravel()), X.shape[1]).cast(pa.list_(pa.float32()))
        names = ["pixels"]
    else:
        names = [f"p{j:03d}" for j in range(X.shape[1])]
        for j, name in enumerate(names):
            cols[name] = pa.array(X[:, j].astype(np.float64))
    write_partition(uri, "ds", RUN_DATE, pa.table(cols))
    return names


def run_pipeline(X, y, kind: str, seed: int, numeric_scaling: str = "auto") -> dict:
    import pandas as pd

    from decflow.config import PipelineConfig
    from decflow.data.partitioned import read_partition
    from decflow.errors import Rejected
    from decflow.model.metrics import supervised_scores
    from decflow.flows.recluster import recluster

    with tempfile.TemporaryDirectory(prefix="decflow-pq-") as home:
        uri = str(Path(home) / "source")
        names = write_source(uri, X, y, kind)
        features = {"vector": {"pixels": X.shape[1]}} if kind == "vector" else \
            {"numeric": names, "numeric_scaling": numeric_scaling}
        config = PipelineConfig.model_validate({
            "home": home,
            "source": {"uri": uri, "id_column": "id", "label_column": "digit", "window_days": 1},
            "features": features,
            "model": {"n_clusters": int(len(np.unique(y)))},
            "train": {"random_state": seed}})
        from mlflow import MlflowClient

        t = time.perf_counter()
        try:
            result = recluster(config=config, run_date=RUN_DATE)
        except Rejected as exc:  # a first version rejected by the gates labels nothing
            client = MlflowClient(config.tracking_uri())
            exp = client.get_experiment_by_name(config.registry.experiment)
            run = client.search_runs([exp.experiment_id], max_results=1)[0]
            m = run.data.metrics
            return {"acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"], "rows": 0,
                    "seconds": time.perf_counter() - t,
                    "seconds_pretrain": m.get("seconds_pretrain"),
                    "promotion": f"failed: {exc}"[:300],
                    "scored_on": "training rows (no labels written)"}
        wall = time.perf_counter() - t
        labels = read_partition(config.labels_uri(), "ds", RUN_DATE)
        truth = pd.Series(y, index=np.arange(len(y)))
        scores = supervised_scores(truth.loc[labels["id"]].to_numpy(),
                                   labels["cluster_id"].to_numpy())
        m = MlflowClient(config.tracking_uri()).get_run(result["run_id"]).data.metrics
        return {**scores, "rows": int(len(labels)), "seconds": wall,
                "seconds_pretrain": m.get("seconds_pretrain"),
                "promotion": (result["promotion"] or {}).get("decision"),
                "scored_on": "written labels"}


def run_estimator(X, y, seed: int) -> dict:
    from decflow import DeepEmbeddedClustering
    from decflow.model.metrics import supervised_scores

    t = time.perf_counter()
    est = DeepEmbeddedClustering(n_clusters=int(len(np.unique(y))), random_state=seed).fit(X)
    return {**supervised_scores(y, est.labels_), "seconds": time.perf_counter() - t,
            "seconds_pretrain": est.timings_.get("pretrain")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "usps"])
    ap.add_argument("--kinds", nargs="+", default=["vector", "numeric"],
                    choices=["vector", "numeric"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--numeric-scaling", default="auto", choices=["auto", "column", "shared"],
                    help="features.numeric_scaling for the numeric kind (default: the default)")
    ap.add_argument("--no-estimator", action="store_true",
                    help="skip the estimator rows (pipeline only)")
    ap.add_argument("--out", default=str(HERE / "results" / "pipeline_quality"))
    args = ap.parse_args(argv)

    rows, skipped = [], []
    for name in args.datasets:
        if name == "usps" and not USPS.exists():
            msg = f"usps: skipped, {USPS} not found (development data beside the repository)"
            print(msg, flush=True)
            skipped.append(msg)
            continue
        X, y = load(name)
        for seed in args.seeds:
            if not args.no_estimator:
                r = {"dataset": name, "path": "estimator", "kind": "-", "seed": seed,
                     **run_estimator(X, y, seed)}
                rows.append(r)
                print(json.dumps(r), flush=True)
            for kind in args.kinds:
                label = kind if kind == "vector" else f"numeric ({args.numeric_scaling})"
                r = {"dataset": name, "path": "pipeline", "kind": label, "seed": seed,
                     **run_pipeline(X, y, kind, seed, args.numeric_scaling)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    out = stamped(args, rows=rows, skipped=skipped)
    write_results(args.out, out, to_markdown(out))
    return 0


def to_markdown(out: dict) -> str:
    lines = ["# Quality through the pipeline", "",
             f"{out['when']}, {out['machine']}; default config, labels for scoring only.", "",
             "| dataset | path | kind | seed | ACC | NMI | ARI | rows | wall s | pretrain s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        pre = r.get("seconds_pretrain")
        lines.append(f"| {r['dataset']} | {r['path']} | {r['kind']} | {r['seed']} | "
                     f"{r['acc']:.4f} | {r['nmi']:.4f} | {r['ari']:.4f} | "
                     f"{r.get('rows', '')} | {r['seconds']:.0f} | "
                     f"{'' if pre is None else f'{pre:.0f}'} |")
    groups = {}
    for r in out["rows"]:
        groups.setdefault((r["dataset"], r["path"], r["kind"]), []).append(r["acc"])
    lines += ["", "| dataset | path | kind | seeds | mean ACC | min ACC | vs estimator |",
              "|---|---|---|---:|---:|---:|---:|"]
    for (d, p, k), accs in groups.items():
        est = groups.get((d, "estimator", "-"))
        delta = "" if p == "estimator" or not est else f"{np.mean(accs) - np.mean(est):+.4f}"
        lines.append(f"| {d} | {p} | {k} | {len(accs)} | {np.mean(accs):.4f} | "
                     f"{min(accs):.4f} | {delta} |")
    lines += [""] + [f"- {s}" for s in out["skipped"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
