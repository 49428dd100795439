"""Quality against fine-tuning steps where the step limit binds: training samples of more
than 51,200 rows (128,000 under the earlier limit of 5,000 steps).

The default fine-tuning distils the initialisation's partition (``train.anchor_updates:
all``) and runs ``max_iter: auto`` steps: ten passes over the training rows, at least 500 and
at most ``decflow.model.estimator.KEPT_TARGET_MAX_STEPS``. Digits (1,797 rows) and USPS
(9,298) get 500 steps whatever that limit is; a nightly's 200,000-row sample gets the limit.
This benchmark chose it (2,000; it was 5,000). With a constant
learning rate a run of N steps passes through the state of every shorter run at the same
seed, so one run at a large limit gives the quality of every smaller one: at each target
update (one pass) the callback labels the training rows and rows held out of training, with
the live network, as a run stopped there would, and scores them against the truth.

The training path is the nightly's: the feature encoder fitted on the sample, the autoencoder
pretrained from the default config (``pretrain_from_config``), the manifold initialisation
over an embedded Dask cluster (``engine.centroids.init_centroids``), then
``fine_tune(init, target)``. Only ``train.max_iter`` is set (``--max-steps``), and the seed.

    python benchmarks/finetune_steps.py                      # synthetic and KDD Cup 99, seed 0
    python benchmarks/finetune_steps.py --datasets synthetic --seeds 0,1

Data: ``synthetic`` is ``decflow generate``'s table (1,000,000 rows, 10 clusters, 78
encoded features), written to a temporary folder; ``kdd`` is KDD Cup 99 (10%) from
../shared/data (skipped with a message when absent). Each trains on a 200,000-row sample (the
default ``max_train_rows``) and holds out 100,000 other rows.
Writes <out>.json and <out>.md (default benchmarks/results/finetune_steps).
"""

import argparse
import datetime as dt
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

HELD_OUT_ROWS = 100_000


def load_synthetic(seed: int, rows: int):
    """(frame, truth, features section) of a generated one-day table."""
    import pyarrow.parquet as pq

    from decflow.data.synthetic import generate_source, synthetic_config

    with tempfile.TemporaryDirectory(prefix="decflow-ft-") as tmp:
        uri = str(Path(tmp) / "source")
        generate_source(uri, rows=rows, days=1, end_date=dt.date(2026, 11, 21), seed=seed)
        frame = pq.read_table(uri).to_pandas()
        features = synthetic_config(uri).features
    return frame, frame.pop("cluster").to_numpy(), features


def load_kdd(seed: int, rows: int):
    from decflow.config import FeaturesConfig
    from tabular_quality import DATA, FILES, load

    if not (DATA / FILES["kdd"]).exists():
        return None
    frame, y, numeric, categorical = load("kdd")
    return frame, y, FeaturesConfig(numeric=numeric, categorical=categorical)


LOADERS = {"synthetic": load_synthetic, "kdd": load_kdd}


class LabelAtUpdates:
    """At the start of fine-tuning and at each target update: the training rows' and the
    held-out rows' labels from the network as it is then (what a run stopped there gives),
    scored against the truth. Uses the estimator's live modules (``autoencoder_`` and the
    clustering layer) without changing them: ``encode`` runs in eval mode and restores the
    mode, and draws no random numbers."""

    def __init__(self, X, y, X_out, y_out):
        import torch

        self.X, self.y = torch.from_numpy(X), y
        self.X_out, self.y_out = torch.from_numpy(X_out), y_out
        self.est = None
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.spent = 0.0  # seconds this callback took (not training's)

    def on_phase_begin(self, phase, info):
        if phase == "finetune":
            self.t0 = time.perf_counter()
            self._score(0)

    def on_epoch_end(self, phase, epoch, logs):
        if phase == "finetune":
            self._score(int(logs["step"]), logs.get("delta_label"))

    def _score(self, step: int, delta=None) -> None:
        import torch

        from decflow.model.metrics import supervised_scores
        from decflow.model.training import TRAINING_ENCODE_BATCH_ROWS, encode

        t = time.perf_counter()
        ae, clustering = self.est.autoencoder_, self.est._clustering
        with torch.no_grad():
            train = clustering(encode(ae, self.X, torch.device("cpu"),
                                      TRAINING_ENCODE_BATCH_ROWS)).argmax(1).numpy()
            out = clustering(encode(ae, self.X_out, torch.device("cpu"))).argmax(1).numpy()
        row = {"step": step, "delta_label": delta,
               "train_seconds": t - self.t0 - self.spent,
               **{f"train_{k}": v for k, v in supervised_scores(self.y, train).items()},
               **{f"held_out_{k}": v for k, v in supervised_scores(self.y_out, out).items()}}
        self.rows.append(row)
        self.spent += time.perf_counter() - t
        print(f"  step {step:5d}: train ACC {row['train_acc']:.4f} NMI {row['train_nmi']:.4f}"
              f" | held-out ACC {row['held_out_acc']:.4f} NMI {row['held_out_nmi']:.4f}"
              f" ({row['train_seconds']:.0f} s of fine-tuning)", flush=True)


def run(name: str, seed: int, max_steps: int, train_rows: int, synthetic_rows: int
        ) -> dict | None:
    from decflow.config import ComputeConfig, PipelineConfig
    from decflow.engine.centroids import init_centroids
    from decflow.engine.compute import dask_client, run_cluster
    from decflow.model.building import pretrain_from_config
    from decflow.model.features import FeatureEncoder

    data = LOADERS[name](seed, synthetic_rows)
    if data is None:
        print(f"{name}: skipped, its file is not in ../shared/data", flush=True)
        return None
    frame, y, features = data
    k = len(np.unique(y))
    config = PipelineConfig.model_validate({
        "source": {"uri": "unused"}, "features": features.model_dump(),
        "model": {"n_clusters": k},
        "train": {"random_state": seed, "max_iter": max_steps, "max_train_rows": train_rows}})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    train, out = order[:config.train.max_train_rows], order[config.train.max_train_rows:]
    out = out[:min(HELD_OUT_ROWS, train_rows // 2)]
    encoder = FeatureEncoder(config.features)
    X = encoder.fit_transform(frame.iloc[train].reset_index(drop=True))
    X_out = encoder.transform(frame.iloc[out].reset_index(drop=True))
    print(f"{name}, seed {seed}: {len(X):,} training rows x {X.shape[1]} features, "
          f"{len(X_out):,} held out, k={k}", flush=True)
    scorer = LabelAtUpdates(X, y[train], X_out, y[out])
    t = time.perf_counter()
    est = pretrain_from_config(config, X, callbacks=[scorer])
    scorer.est = est
    pretrain_s = time.perf_counter() - t
    t = time.perf_counter()
    compute = ComputeConfig()
    with run_cluster(compute), dask_client(compute) as client:
        init = init_centroids(est, X, config, client)
    init_s = time.perf_counter() - t
    est.fine_tune(X, init=init.centers, target=init.target)
    return {"dataset": name, "seed": seed, "k": k, "training_rows": len(X),
            "features": int(X.shape[1]), "held_out_rows": len(X_out),
            "pretrain_s": pretrain_s, "init_s": init_s, "n_iter": est.n_iter_,
            "per_update": scorer.rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="synthetic,kdd")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--max-steps", type=int, default=5000,
                    help="train.max_iter of every run (its updates give the shorter runs)")
    ap.add_argument("--train-rows", type=int, default=200_000,
                    help="train.max_train_rows (the default's 200,000)")
    ap.add_argument("--synthetic-rows", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(HERE / "results" / "finetune_steps"))
    args = ap.parse_args(argv)
    runs = []
    for name in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run(name, seed, args.max_steps, args.train_rows, args.synthetic_rows)
            if r is not None:
                runs.append(r)
                out = stamped(args, runs=runs)
                write_results(args.out, out, to_markdown(out))
    return 0


_MEANS = ("train_acc", "train_nmi", "held_out_acc", "held_out_nmi", "held_out_ari")


def _by_step(runs: list[dict]):
    """(data set, step, the runs' rows at that step) for steps every seed of the set has."""
    for name in dict.fromkeys(r["dataset"] for r in runs):
        mine = [{u["step"]: u for u in r["per_update"]} for r in runs if r["dataset"] == name]
        for step in sorted(set.intersection(*(set(m) for m in mine))):
            yield name, step, [m[step] for m in mine]


def to_markdown(out: dict) -> str:
    a = out["args"]
    lines = [f"# Quality against fine-tuning steps (training samples of {a['train_rows']:,} "
             "rows)", "",
             f"{out['when']}, {out['machine']}; default config, `train.max_iter` "
             f"{a['max_steps']}. Each row is the network at that step of one run (what a run "
             "limited to that many steps gives): train = the training rows, held out = rows "
             "outside the sample (counts below). fine-tuning s excludes the scoring.", "",
             "## Mean over seeds", "",
             "| data set | step | seeds | train ACC | train NMI | held-out ACC | held-out NMI |"
             " held-out ARI |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             "## Every update", "",
             "| data set | seed | step | delta_label | fine-tuning s | train ACC | train NMI | "
             "train ARI | held-out ACC | held-out NMI | held-out ARI |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    at = lines.index("## Every update")
    lines[at:at] = [f"| {name} | {step} | {len(rows)} | " + " | ".join(
        f"{np.mean([u[key] for u in rows]):.4f}" for key in _MEANS) + " |"
        for name, step, rows in _by_step(out["runs"])] + [""]
    for r in out["runs"]:
        for u in r["per_update"]:
            d = "" if u["delta_label"] is None else f"{u['delta_label']:.4f}"
            lines.append(f"| {r['dataset']} | {r['seed']} | {u['step']} | {d} | "
                         f"{u['train_seconds']:.0f} | {u['train_acc']:.4f} | "
                         f"{u['train_nmi']:.4f} | {u['train_ari']:.4f} | "
                         f"{u['held_out_acc']:.4f} | {u['held_out_nmi']:.4f} | "
                         f"{u['held_out_ari']:.4f} |")
    lines += ["", "| data set | seed | training rows | held out | features | k | pretrain s | "
              "init s | steps |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in out["runs"]:
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['training_rows']:,} | "
                     f"{r['held_out_rows']:,} | {r['features']} | {r['k']} | "
                     f"{r['pretrain_s']:.0f} | {r['init_s']:.0f} | {r['n_iter']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
