"""The cost of the manifold initialisation as the training sample grows: one UMAP view (the
previous default) against ``model.init_views`` views (the default, 5).

The embedding is a synthetic N x 10 float32 mixture of 10 anisotropic Gaussian clusters of
different sizes (the shape of a pretrained embedding: ``n_components`` = 10, k = 10). Each arm
calls ``select_manifold_init`` with the default 10 mixture restarts per view, in this process,
as the estimator and the flow do; the flow adds one Dask k-means and one mixture per view on
top. Imports and numba compilation are paid once before the first arm and charged to none.

    python benchmarks/init_views.py                          # 10,000 and 50,000 rows
    python benchmarks/init_views.py --rows 200000 --views 5

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


def embedding(rows: int, k: int = 10, dims: int = 10, seed: int = 0) -> np.ndarray:
    """Clusters of different sizes, each stretched along its own random directions."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(k, 5.0))
    labels = rng.choice(k, size=rows, p=sizes)
    means = rng.normal(scale=4.0, size=(k, dims))
    shapes = rng.normal(scale=0.6, size=(k, dims, dims)) + np.eye(dims)
    Z = means[labels] + np.einsum("nd,nde->ne", rng.normal(size=(rows, dims)), shapes[labels])
    return Z.astype(np.float32)


def run(Z, k, views, seed) -> dict:
    from decflow.initialization import select_manifold_init

    t = time.perf_counter()
    chosen = select_manifold_init(Z, k, n_views=views, n_init=10, random_state=seed)
    return {"seconds": time.perf_counter() - t, "chosen": chosen.chosen,
            "silhouettes": [round(s, 6) for s in chosen.silhouettes]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "init_views"))
    args = ap.parse_args(argv)

    k = 10
    # UMAP finds exact neighbours below 4,096 rows and approximate ones (NN-descent) above:
    # warm up on both sides so every arm finds everything compiled.
    for n in (3000, 5000):
        run(embedding(n, k, seed=args.seed + 1), k, 1, args.seed)
    rows = []
    for n in args.rows:
        Z = embedding(n, k, seed=args.seed)
        one = run(Z, k, 1, args.seed)
        many = run(Z, k, args.views, args.seed)
        rows.append({"rows": n, "one_view": one, "views": many})
        print(json.dumps(rows[-1]), flush=True)
    out = stamped(args, rows=rows)
    write_results(args.out, out, to_markdown(out))
    return 0


def to_markdown(out: dict) -> str:
    v = out["args"]["views"]
    lines = ["# Manifold initialisation: the cost of the views", "",
             f"{out['when']}, {out['machine']}; N x 10 synthetic embedding, k = 10, "
             f"10 mixture restarts per view, one process.", "",
             f"| rows | 1 view s | {v} views s | ratio | per extra view s |",
             "|---:|---:|---:|---:|---:|"]
    for r in out["rows"]:
        one, many = r["one_view"]["seconds"], r["views"]["seconds"]
        lines.append(f"| {r['rows']:,} | {one:.1f} | {many:.1f} | {many / one:.2f}x | "
                     f"{(many - one) / max(v - 1, 1):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
