"""GPU checks, one script for a lent GPU machine: fit times, scoring throughput per GPU worker
including Parquet I/O, and the GPU default's quality against the committed CPU numbers.

Rows (target in brackets):

  usps_fit      ``DeepEmbeddedClustering(10).fit`` on all 9,298 USPS rows, default settings
                [< 30 s]; its ACC/NMI against benchmarks/results/quality_usps_default.json
                (the CPU default) [not below the CPU mean by more than 0.01]. Needs usps.h5
                (``--usps``; skipped with a message where it is missing).
  wide_fit      the same on 70,000 x 784 rows (an MNIST-shaped mixture, generated here: no
                download) [< 60 s].
  digits        ACC/NMI of the default on scikit-learn's digits, seeds 0-2, against
                benchmarks/results/quality_digits.json [not below the CPU mean by more than 0.01].
  scoring       ``label_partition`` of one 2,000,000-row synthetic partition on a one-worker
                Dask cluster (``--threads`` threads) on the GPU: read, validate, encode, score,
                write labels [>= 1,000,000 rows/s per GPU worker], and the same without
                validation's share (score only) for where the time goes.

    python benchmarks/gpu.py                      # everything, about 5 minutes on an H100
    python benchmarks/gpu.py --parts scoring --scoring-rows 500000
    python benchmarks/gpu.py --quick              # a smoke test (runs on CPU too)

Writes benchmarks/results/gpu.{json,md} (``--out``). Exit code 0 when every row ran (misses
are rows, not errors).
"""

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
USPS = HERE.parent.parent / "shared" / "data" / "usps.h5"
PARTS = ("usps_fit", "wide_fit", "digits", "scoring")


def _acc_nmi(y, labels) -> dict:
    from decflow.model.metrics import cluster_accuracy, nmi

    return {"acc": float(cluster_accuracy(y, labels)), "nmi": float(nmi(y, labels))}


def _fit(X, k: int, seed: int, device: str) -> tuple[object, float]:
    import torch

    from decflow import DeepEmbeddedClustering

    t0 = time.perf_counter()
    est = DeepEmbeddedClustering(k, random_state=seed, device=device).fit(X)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return est, time.perf_counter() - t0


def _cpu_mean(name: str, dataset: str) -> dict | None:
    path = HERE / "results" / name
    if not path.exists():
        return None
    runs = json.loads(path.read_text())["datasets"][dataset]["methods"]["decflow"]["runs"]
    return {m: float(np.mean([r[m] for r in runs])) for m in ("acc", "nmi")}


def bench_usps(args, rows: list) -> None:
    path = Path(args.usps)
    if not path.exists():
        print(f"usps_fit: skipped, {path} is missing (pass --usps)", flush=True)
        rows.append({"row": "USPS fit", "result": "skipped", "detail": f"{path} missing"})
        return
    import h5py

    with h5py.File(path) as f:
        X = np.concatenate([f["train/data"][:], f["test/data"][:]]).astype(np.float32)
        y = np.concatenate([f["train/target"][:], f["test/target"][:]])
    est, seconds = _fit(X, 10, 0, args.device)
    q = _acc_nmi(y, est.labels_)
    rows.append({"row": "USPS fit, default (9,298 x 256)", "value": seconds, "unit": "s",
                 "target": "< 30 s", "result": "pass" if seconds < 30 else "miss",
                 "detail": f"pretrain {est.timings_['pretrain']:.1f} s, init "
                           f"{est.timings_['init']:.1f} s, fine-tune "
                           f"{est.timings_['finetune']:.1f} s"})
    _quality_row(rows, "USPS", q, _cpu_mean("quality_usps_default.json", "usps"), 1)


def _quality_row(rows: list, name: str, q: dict, cpu: dict | None, seeds: int) -> None:
    if cpu is None:
        rows.append({"row": f"{name} quality on GPU", "value": q["acc"], "unit": "ACC",
                     "result": "info", "detail": "no committed CPU numbers to compare"})
        return
    ok = q["acc"] >= cpu["acc"] - 0.01 and q["nmi"] >= cpu["nmi"] - 0.01
    rows.append({"row": f"{name} quality on GPU ({seeds} seed{'s' if seeds > 1 else ''}) vs "
                        f"the CPU default", "value": q["acc"], "unit": "ACC",
                 "target": f">= CPU {cpu['acc']:.4f} - 0.01 (NMI {cpu['nmi']:.4f})",
                 "result": "pass" if ok else "miss", "detail": f"NMI {q['nmi']:.4f}"})


def bench_wide(args, rows: list) -> None:
    rng = np.random.default_rng(0)
    n, d, k = args.wide_rows, 784, 10
    centers = rng.random((k, d), dtype=np.float32)
    y = rng.integers(0, k, n)
    X = np.clip(centers[y] + rng.normal(0, 0.25, (n, d)).astype(np.float32), 0, 1)
    est, seconds = _fit(X, k, 0, args.device)
    rows.append({"row": f"wide fit, default ({n:,} x {d}, generated mixture)", "value": seconds,
                 "unit": "s", "target": "< 60 s", "result": "pass" if seconds < 60 else "miss",
                 "detail": f"ACC {_acc_nmi(y, est.labels_)['acc']:.4f}; pretrain "
                           f"{est.timings_['pretrain']:.1f} s, init {est.timings_['init']:.1f} s,"
                           f" fine-tune {est.timings_['finetune']:.1f} s"})


def bench_digits(args, rows: list) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(np.float32), d.target
    seeds = [0] if args.quick else [0, 1, 2]
    qs, secs = [], []
    for seed in seeds:
        est, seconds = _fit(X, 10, seed, args.device)
        qs.append(_acc_nmi(y, est.labels_))
        secs.append(seconds)
    q = {m: float(np.mean([r[m] for r in qs])) for m in ("acc", "nmi")}
    _quality_row(rows, "digits", q, _cpu_mean("quality_digits.json", "digits"), len(seeds))
    rows[-1]["detail"] += f"; fit {np.mean(secs):.1f} s a seed"


def bench_scoring(args, rows: list) -> None:
    import pyarrow.parquet as pq

    from decflow import DeepEmbeddedClustering
    from decflow.config import ComputeConfig
    from decflow.data import sources
    from decflow.data.synthetic import generate_source, synthetic_config
    from decflow.engine import partitions as scoring
    from decflow.engine.compute import dask_client
    from decflow.engine.payload import scatter_model
    from decflow.model.features import FeatureEncoder

    work = Path(tempfile.mkdtemp(prefix="decflow-gpu-"))
    try:
        end = dt.date(2026, 11, 21)
        parts = generate_source(str(work / "src"), rows=args.scoring_rows, days=1, end_date=end,
                                rows_per_group=100_000)
        config = synthetic_config(str(work / "src"), home=str(work / "home"), window_days=1,
                                  train={"device": args.device},
                                  compute={"n_workers": 1, "threads_per_worker": args.threads,
                                           "processes": False})
        frame = next(pq.ParquetFile(parts[0].path).iter_batches(20_000)).to_pandas()
        encoder = FeatureEncoder(config.features)
        X = encoder.fit_transform(frame)
        m = config.model
        est = DeepEmbeddedClustering(m.n_clusters, n_components=m.n_components,
                                     hidden=tuple(m.hidden), pretrain_epochs=1, max_iter=20,
                                     init="k-means", n_init=1, device=args.device,
                                     random_state=0).fit(X)
        scan = sources.scan_night(config.source, end, 1, None)
        spec = scoring.LabelsSpec("gpu", "1", "0" * 32, dt.datetime.now(dt.timezone.utc),
                                  args.device)
        compute = ComputeConfig(n_workers=1, threads_per_worker=args.threads, processes=False)
        with dask_client(compute) as client:
            payload = scatter_model(client, (encoder, est))
            scoring.label_partition(client, scan, config, payload, spec)  # warm: CUDA, GX
            t0 = time.perf_counter()
            out = scoring.label_partition(client, scan, config, payload, spec)
            seconds = time.perf_counter() - t0
        rps = out.rows_written / seconds
        rows.append({"row": f"scoring one GPU worker ({args.threads} threads), "
                            f"{args.scoring_rows:,} rows: read, validate, score, write",
                     "value": rps, "unit": "rows/s", "target": ">= 1,000,000 rows/s",
                     "result": "pass" if rps >= 1e6 else "miss",
                     "detail": f"{seconds:.1f} s, {out.rows_written:,} labels written"})
        # where the time goes: the same rows scored without the expectation suite
        t0 = time.perf_counter()
        n = 0
        for chunk in scan.chunks(config.compute.chunk_rows):
            for batch in sources.read_chunk(chunk, config.source.date_column,
                                            config.source_columns(), config.batch_rows()):
                scoring.score_table(batch, (encoder, est), scoring.make_plan(config, 1, spec))
                n += len(batch)
        score_s = time.perf_counter() - t0
        rows.append({"row": "scoring without validation, one thread: read, encode, score",
                     "value": n / score_s, "unit": "rows/s", "result": "info",
                     "detail": f"{score_s:.1f} s for {n:,} rows"})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def to_markdown(out: dict) -> str:
    lines = [f"# GPU checks ({out['date_utc']})", "",
             f"- device: {out['device']}; torch {out['torch']}; command: `{out['command']}`", "",
             "| row | value | target | result | detail |", "|---|---|---|---|---|"]
    for r in out["rows"]:
        value = r.get("value")
        shown = "-" if value is None else (f"{value:,.0f} {r['unit']}" if value >= 1000
                                          else f"{value:.4g} {r['unit']}")
        result = r["result"] if r["result"] != "miss" else "**miss**"
        lines.append(f"| {r['row']} | {shown} | {r.get('target', '-')} | {result} | "
                     f"{r.get('detail', '')} |")
    for e in out["errors"]:
        lines.append(f"\nerror in {e['part']}: {e['message']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    ap.add_argument("--usps", default=str(USPS))
    ap.add_argument("--wide-rows", type=int, default=70_000)
    ap.add_argument("--scoring-rows", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=8, help="threads of the scoring worker")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one seed")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu"))
    args = ap.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.wide_rows, args.scoring_rows = min(args.wide_rows, 3_000), min(args.scoring_rows,
                                                                             50_000)
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else f"cpu ({platform.processor() or platform.machine()})")
    print(f"GPU checks on {device}", flush=True)
    rows, errors = [], []
    benches = {"usps_fit": bench_usps, "wide_fit": bench_wide, "digits": bench_digits,
               "scoring": bench_scoring}
    for name in [p.strip() for p in args.parts.split(",") if p.strip()]:
        t0 = time.perf_counter()
        try:
            benches[name](args, rows)
        except Exception as exc:  # reported as an error row; the other parts still run
            traceback.print_exc()
            errors.append({"part": name, "message": f"{type(exc).__name__}: {exc}"})
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    out = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "device": device, "torch": torch.__version__, "command": " ".join(sys.argv),
           "rows": rows, "errors": errors}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(to_markdown(out))
    print(to_markdown(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.exit(main())
