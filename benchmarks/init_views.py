"""The cost of the manifold initialisation as the training sample grows: one UMAP view (the
previous default), ``model.init_views`` views (5) fitted on all rows, and the default: the same
views fitted on a sample of ``model.init_view_rows`` (50,000) rows, the chosen one placing the
others.

The embedding is a synthetic N x 10 float32 mixture of 10 anisotropic Gaussian clusters of
different sizes (the shape of a pretrained embedding: ``n_components`` = 10, k = 10). Each arm
calls ``select_manifold_init`` with the default 10 mixture restarts per view, in this process,
as the estimator and the flow do; the flow adds one Dask k-means and one mixture per view on
top. Imports and numba compilation are paid once before the first arm and charged to none.
Each arm's partition is scored against the clusters the embedding was drawn from (ACC).

    python benchmarks/init_views.py                          # 10,000 and 50,000 rows
    python benchmarks/init_views.py --rows 200000 --arms one sampled

Writes benchmarks/results/init_views.{json,md} (or --out). Run it alone on the machine.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from results_file import stamped, write_results  # noqa: E402


ARMS = ("one", "views", "sampled")


def embedding(rows: int, k: int = 10, dims: int = 10, seed: int = 0, with_labels: bool = False):
    """Clusters of different sizes, each stretched along its own random directions (and the
    cluster of each row with ``with_labels``)."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=rows, p=sizes)
    means = rng.normal(scale=4.0, size=(k, dims))
    shapes = rng.normal(scale=0.6, size=(k, dims, dims)) + np.eye(dims)
    Z = means[labels] + np.einsum("nd,nde->ne", rng.normal(size=(rows, dims)), shapes[labels])
    return (Z.astype(np.float32), labels) if with_labels else Z.astype(np.float32)


def run(Z, k, views, seed, view_rows=None, truth=None) -> dict:
    from decflow.model.initialization import select_manifold_init
    from decflow.model.metrics import supervised_scores

    t = time.perf_counter()
    chosen = select_manifold_init(Z, k, n_views=views, n_init=10, random_state=seed,
                                  view_rows=view_rows)
    out = {"seconds": time.perf_counter() - t, "chosen": chosen.chosen,
           "view_rows": chosen.view_rows,
           "silhouettes": [round(s, 6) for s in chosen.silhouettes]}
    if truth is not None:
        out["acc"] = round(supervised_scores(truth, chosen.resp.argmax(axis=1))["acc"], 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--view-rows", type=int, default=50_000,
                    help="rows the views are fitted on in the 'sampled' arm")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                    help="one: 1 view on all rows; views: --views views on all rows; "
                         "sampled: --views views on --view-rows rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "init_views"))
    args = ap.parse_args(argv)

    k = 10
    # UMAP finds exact neighbours below 4,096 rows and approximate ones (NN-descent) above:
    # warm up on both sides so every arm finds everything compiled.
    for n in (3000, 5000):
        run(embedding(n, k, seed=args.seed + 1), k, 1, args.seed)
    if "sampled" in args.arms:  # UMAP's transform compiles on first use
        run(embedding(6000, k, seed=args.seed + 1), k, 1, args.seed, view_rows=5000)
    settings = {"one": (1, None), "views": (args.views, None),
                "sampled": (args.views, args.view_rows)}
    rows = []
    for n in args.rows:
        Z, truth = embedding(n, k, seed=args.seed, with_labels=True)
        row = {"rows": n}
        for arm in args.arms:
            views, view_rows = settings[arm]
            row[arm] = run(Z, k, views, args.seed, view_rows, truth)
            print(json.dumps({"rows": n, arm: row[arm]}), flush=True)
        rows.append(row)
    out = stamped(args, rows=rows)
    write_results(args.out, out, to_markdown(out))
    return 0


def to_markdown(out: dict) -> str:
    a = out["args"]
    names = {"one": "1 view, all rows", "views": f"{a['views']} views, all rows",
             "sampled": f"{a['views']} views on {a['view_rows']:,} rows"}
    arms = [arm for arm in ARMS if arm in a["arms"]]
    lines = ["# Manifold initialisation: the cost of the views", "",
             f"{out['when']}, {out['machine']}; N x 10 synthetic embedding, k = 10, "
             f"10 mixture restarts per view, one process; ACC against the clusters the "
             f"embedding was drawn from.", "",
             "| rows | " + " | ".join(f"{names[arm]} s (ACC)" for arm in arms) + " |",
             "|---:|" + "---:|" * len(arms)]
    for r in out["rows"]:
        cells = [f"{r[arm]['seconds']:.1f} ({r[arm]['acc']:.4f})"
                 for arm in arms]
        lines.append(f"| {r['rows']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
