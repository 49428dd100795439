"""Quality benchmark: decflow's default DeepEmbeddedClustering against baselines and a peer.

Default settings only (one configuration for every data set); labels are used for scoring only.
Writes benchmarks/results/quality.json and quality.md.

    python benchmarks/quality.py                       # digits + USPS, 3 seeds, all baselines
    python benchmarks/quality.py --datasets digits --seeds 0 --no-peers
    python benchmarks/quality.py --peer-python /path/to/venv/bin/python   # ClustPy DEC/IDEC

The peer (ClustPy) needs torchvision, which pulls a different torch build, so it runs in its own
environment: pass that environment's python with --peer-python (see benchmarks/README.md).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
USPS = HERE.parent.parent / "shared" / "data" / "usps.h5"


def load(name):
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target
    import h5py

    with h5py.File(USPS) as f:
        X = np.concatenate([f["train/data"][:], f["test/data"][:]]).astype(np.float32)
        y = np.concatenate([f["train/target"][:], f["test/target"][:]])
    return X, y


# The default before 2026-11-26 (one UMAP view, 5 anchored target updates, 6,000 pretraining
# steps): `--methods decflow,decflow_v1` measures the current default against it in one run.
PREVIOUS_DEFAULT = {"init_views": 1, "anchor_updates": 5, "pretrain_steps": 6000}


def run_decflow(X, y, seed, **params):
    from decflow import DeepEmbeddedClustering
    from decflow.model.metrics import supervised_scores

    t = time.perf_counter()
    est = DeepEmbeddedClustering(n_clusters=len(np.unique(y)), random_state=seed,
                                 **params).fit(X)
    wall = time.perf_counter() - t
    device = next(est.autoencoder_.parameters()).device
    return {**supervised_scores(y, est.labels_), "seconds": wall,
            **{f"seconds_{k}": v for k, v in est.timings_.items()}, "device": str(device)}


def run_kmeans(X, y, seed):
    from sklearn.cluster import KMeans

    from decflow.model.metrics import supervised_scores

    t = time.perf_counter()
    labels = KMeans(len(np.unique(y)), n_init=20, random_state=seed).fit_predict(X)
    return {**supervised_scores(y, labels), "seconds": time.perf_counter() - t}


def run_umap_gmm(X, y, seed):
    import umap
    from sklearn.mixture import GaussianMixture

    from decflow.model.metrics import supervised_scores

    k = len(np.unique(y))
    t = time.perf_counter()
    M = umap.UMAP(n_components=10, random_state=seed).fit_transform(X)
    labels = GaussianMixture(k, covariance_type="full", random_state=seed).fit_predict(M)
    return {**supervised_scores(y, labels), "seconds": time.perf_counter() - t}


PEER_SCRIPT = r"""
import json, sys, time, numpy as np, torch
from clustpy.deep import DEC, IDEC
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from scipy.optimize import linear_sum_assignment
X = np.load(sys.argv[1]); y = np.load(sys.argv[2]); seed = int(sys.argv[3]); method = sys.argv[4]
torch.set_num_threads(2)
k = len(np.unique(y))
t = time.perf_counter()
labels = {"DEC": DEC, "IDEC": IDEC}[method](k, random_state=seed).fit(X).labels_
wall = time.perf_counter() - t
c = np.zeros((labels.max() + 1, y.max() + 1)); np.add.at(c, (labels, y), 1)
r, cc = linear_sum_assignment(-c)
print(json.dumps({"acc": c[r, cc].sum() / len(y), "nmi": normalized_mutual_info_score(y, labels),
                  "ari": adjusted_rand_score(y, labels), "seconds": wall}))
"""


def run_peer(python, method):
    def run(X, y, seed):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            np.save(f"{d}/X.npy", X)
            np.save(f"{d}/y.npy", y)
            out = subprocess.run([python, "-c", PEER_SCRIPT, f"{d}/X.npy", f"{d}/y.npy",
                                  str(seed), method], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    return run


def machine():
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "gpu": gpu}


def summarise(rows):
    out = {}
    for key in rows[0]:
        if isinstance(rows[0][key], str):
            out[key] = sorted({r[key] for r in rows})
            continue
        vals = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(vals.mean()), "min": float(vals.min())}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="digits,usps")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="decflow,kmeans,umap_gmm,clustpy_dec,clustpy_idec")
    ap.add_argument("--no-peers", action="store_true", help="skip the ClustPy peer")
    ap.add_argument("--peer-python", help="python of an environment with clustpy installed")
    ap.add_argument("--peer-seeds", help="seeds for the peer (default: --seeds)")
    ap.add_argument("--device", default="auto",
                    help="decflow's device: auto (CUDA when present), cpu or cuda; on a GPU "
                         "machine run once with each to compare them")
    ap.add_argument("--out", default=str(HERE / "results" / "quality"))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    dev = {"device": args.device}
    methods = {"decflow": lambda X, y, seed: run_decflow(X, y, seed, **dev),
               "kmeans": run_kmeans, "umap_gmm": run_umap_gmm,
               "decflow_v1": lambda X, y, seed: run_decflow(X, y, seed, **PREVIOUS_DEFAULT, **dev)}
    if not args.no_peers and args.peer_python:
        methods["clustpy_dec"] = run_peer(args.peer_python, "DEC")
        methods["clustpy_idec"] = run_peer(args.peer_python, "IDEC")
    wanted = args.methods.split(",")
    results = {"machine": machine(), "seeds": seeds, "datasets": {}}
    for name in args.datasets.split(","):
        if name == "usps" and not USPS.exists():
            print(f"usps: skipped, {USPS} not found (the development data sits in ../shared)")
            continue
        X, y = load(name)
        results["datasets"][name] = ds = {"n_rows": len(X), "n_features": X.shape[1],
                                          "methods": {}}
        for method, fn in methods.items():
            if method not in wanted:
                continue
            mseeds = seeds
            if method.startswith("clustpy") and args.peer_seeds:
                mseeds = [int(s) for s in args.peer_seeds.split(",")]
            rows = []
            for seed in mseeds:
                rows.append(fn(X, y, seed))
                print(name, method, seed,
                      {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()},
                      flush=True)
            ds["methods"][method] = {"runs": rows, "seeds": mseeds, "summary": summarise(rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))


def to_markdown(results):
    lines = ["| data | method | seeds | ACC mean | ACC min | NMI mean | ARI mean | seconds mean "
             "| pretrain / init / fine-tune s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, ds in results["datasets"].items():
        for method, m in ds["methods"].items():
            s = m["summary"]
            phases = " / ".join(f"{s[k]['mean']:.0f}" for k in
                                ("seconds_pretrain", "seconds_init", "seconds_finetune") if k in s)
            label = f"{method} ({', '.join(s['device'])})" if "device" in s else method
            lines.append(f"| {name} ({ds['n_rows']}) | {label} | {len(m['seeds'])} "
                         f"| {s['acc']['mean']:.3f} | {s['acc']['min']:.3f} "
                         f"| {s['nmi']['mean']:.3f} | {s['ari']['mean']:.3f} "
                         f"| {s['seconds']['mean']:.0f} | {phases or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    main()
