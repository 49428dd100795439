"""Orchestration overhead: the `recluster` flow versus the estimator alone, same data and settings.

Runs the demo (scikit-learn digits as a 3-day source table) twice:
  1. `DeepEmbeddedClustering.fit` on the encoded training rows (library only);
  2. the full flow: Prefect (ephemeral) + GX validation + Dask k-means init + MLflow logging,
     registration and label write-back.
The difference is what orchestration costs. Writes JSON + Markdown to benchmarks/results/.

    python benchmarks/orchestration.py [--pretrain-epochs N] [--out PATH]
"""

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help="override the shipped 'auto' pretraining budget (quicker runs)")
    ap.add_argument("--out", default=str(HERE / "results" / "orchestration"))
    args = ap.parse_args(argv)
    from decflow.environment import quiet_defaults

    quiet_defaults()
    home = Path(tempfile.mkdtemp(prefix="decflow-orch-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    (home / "prefect").mkdir()

    from decflow import DeepEmbeddedClustering
    from decflow.data import sources
    from decflow.data.demo import demo_config, write_demo_source
    from decflow.model.features import FeatureEncoder
    from decflow.model.metrics import supervised_scores

    run_date = dt.date(2026, 11, 21)
    config = demo_config(str(home))
    if args.pretrain_epochs is not None:
        config = config.model_copy(update={"train": config.train.model_copy(
            update={"pretrain_epochs": args.pretrain_epochs})})
    write_demo_source(config.source.uri, run_date)

    # 1. the estimator alone (its own in-process k-means/GMM initialisation)
    t0 = time.perf_counter()
    frame, _ = sources.load_window(config.source, run_date)
    X = FeatureEncoder(config.features).fit_transform(frame)
    m, t = config.model, config.train
    est = DeepEmbeddedClustering(
        m.n_clusters, n_components=m.n_components, hidden=tuple(m.hidden), alpha=m.alpha,
        gamma=m.gamma, input_dropout=m.input_dropout, init=m.init,
        pretrain_epochs=t.pretrain_epochs, pretrain_steps=t.pretrain_steps,
        pretrain_lr=t.pretrain_lr, finetune_lr=t.finetune_lr, tol=t.tol, max_iter=t.max_iter,
        batch_size=t.batch_size, n_init=config.kmeans.n_init, device=t.device,
        random_state=t.random_state).fit(X)
    alone = time.perf_counter() - t0
    alone_scores = supervised_scores(frame["digit"], est.labels_)

    # 2. the flow (imported late: Prefect's import is part of what a user pays, but not here)
    from decflow.flows.recluster import recluster

    t0 = time.perf_counter()
    result = recluster(config=config, run_date=run_date)
    flow_s = time.perf_counter() - t0

    out = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "data": {"rows": len(frame), "features": int(X.shape[1])},
        "pretrain_epochs": args.pretrain_epochs or "auto",
        "estimator_alone": {"seconds": alone, "phases": est.timings_, **alone_scores},
        "flow": {"seconds": flow_s, "acc": result["metrics"].get("acc"),
                 "nmi": result["metrics"].get("nmi"), "ari": result["metrics"].get("ari")},
        "overhead_seconds": flow_s - alone,
        "overhead_ratio": flow_s / alone,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    md = ("| run | seconds | ACC | NMI | ARI |\n|---|---|---|---|---|\n"
          f"| estimator alone | {alone:.1f} | {alone_scores['acc']:.3f} | "
          f"{alone_scores['nmi']:.3f} | {alone_scores['ari']:.3f} |\n"
          f"| recluster flow | {flow_s:.1f} | {out['flow']['acc']:.3f} | "
          f"{out['flow']['nmi']:.3f} | {out['flow']['ari']:.3f} |\n\n"
          f"Overhead: {flow_s - alone:.1f} s ({flow_s / alone:.2f}x), "
          f"{len(frame)} rows, pretraining epochs {out['pretrain_epochs']}.\n")
    path.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
