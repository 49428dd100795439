"""Scale benchmark: Dask k-means against scikit-learn, scoring against a bare forward pass, and
memory and wall time of the CLI as the table grows.

Parts (``--parts``, comma list; all by default):

  kmeans     ``kmeans_dask`` on a 2-worker LocalCluster vs ``sklearn.cluster.KMeans`` on the same
             N x 10 float32 mixture (same k, n_init, max_iter, tol; sklearn limited to as many
             threads as the cluster has): inertia and wall ratios. Then a huge point, dask only,
             on workers whose memory limit is below the size of the data: completes? peak RSS
             of every process. The dask data is generated on the workers, never in this process.
  forward    the "physical limit": decflow's encoder + soft assignment over rows in memory in
             one process (``forward_rows_per_s``), rows/s.
  score      score + write-back of every row of a small and a large synthetic table
             (``decflow.data.synthetic``): ``decflow backfill --force`` over all partitions as a
             subprocess, with the model the small recluster run registered. Rows/s of the
             labelling phase and of the whole CLI run against the forward pass on the same
             rows (the faster of two passes, one just before the run and one just after);
             peak RSS of every process.
  recluster  ``decflow run`` as a subprocess at both sizes: wall time large/small, peak RSS.
  nightly    ``decflow run`` with the *default* config (only the source, model name and home
             set) on one-partition tables of ``--nightly-rows`` rows: wall time and its phases
             from the flow's log (validation + sample, embedding, pretrain, init, fine-tune,
             evaluation and profiles, registration and gate, labelling, drift and report);
             the largest under 15 minutes, largest / smallest <= 1.3. UMAP's compiled code
             is cached first (a fresh machine's first view fit compiles it, about 95 s), so
             every night is timed as a machine's second night and later ones run.
  writer     the single writer: labels tables (200,000 rows, the labels schema) written by
             ``PartitionWriter`` in one process (rows/s, MiB/s of the file), and the same
             tables' own columns made on the cluster's workers, gathered, completed with the
             model columns and written by the client, as scoring streams them (no model),
             with the CPU seconds the client's process spent a row: the most labels one run
             can write, whatever its workers' speed.

RSS of a subprocess and all its descendants is sampled every 0.2 s. Every score/recluster run
uses the config of ``pipeline_config`` (the one place to adjust settings; ``--set`` adds
overrides). Writes JSON + Markdown to benchmarks/results/scale.{json,md}.

    python benchmarks/scale.py                     # everything, full sizes (about an hour)
    python benchmarks/scale.py --quick             # smoke test, tiny sizes
    python benchmarks/scale.py --parts kmeans --kmeans-rows 2000000 --kmeans-huge-rows 0
    python benchmarks/scale.py --parts score,recluster --set compute.memory_limit=1.5GiB
"""

import argparse
import copy
import datetime as dt
import json
import logging
import operator
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import traceback
from importlib.metadata import PackageNotFoundError, version as _dist_version
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GiB = 2**30
END_DATE = dt.date(2026, 11, 21)  # last partition of the generated tables (fixed: reproducible)
PARTS = ("kmeans", "forward", "writer", "score", "recluster", "nightly")

# Defaults: the full benchmark and --quick. An option given on the command line wins over both.
FULL = {"rows_small": 1_000_000, "rows_large": 10_000_000, "days": 10, "writer_rows": 20_000_000,
        "nightly_rows": "1000000,10000000",
        "rows_per_group": 100_000, "kmeans_rows": 10_000_000, "kmeans_huge_rows": 50_000_000,
        "kmeans_chunk_rows": 1_000_000, "kmeans_huge_chunk_rows": 250_000,
        "kmeans_max_iter": 300, "forward_rows": 500_000,
        "max_train_rows": 20_000, "pretrain_epochs": 5, "finetune_max_iter": 500}
QUICK = {"rows_small": 20_000, "rows_large": 60_000, "days": 10, "rows_per_group": 2_000,
         "writer_rows": 400_000, "nightly_rows": "20000,60000",
         "kmeans_rows": 200_000, "kmeans_huge_rows": 1_000_000, "kmeans_chunk_rows": 50_000,
         "kmeans_huge_chunk_rows": 50_000,
         "kmeans_max_iter": 100, "forward_rows": 20_000, "max_train_rows": 2_000,
         "pretrain_epochs": 1, "finetune_max_iter": 50}


# --- forward pass baseline ------------------------------------------------------------------------

def forward_rows_per_s(model, X, *, batch_size: int | tuple[int, ...] = (512, 4096),
                       device: str = "cpu", repeats: int = 3) -> float:
    """Rows per second of a bare forward pass: scaling, encoder, soft assignment, argmax.

    What ``DeepEmbeddedClustering.assign`` computes (cluster id, confidence, distance), in the
    model's ``inference_precision`` (bf16 where ``uses_bf16`` says scoring runs in it),
    without input checks, feature encoding, I/O or any framework: the limit scoring can reach
    in one process.

    Args:
        model: a fitted ``DeepEmbeddedClustering`` (used on its own device) or the path of its
            ``save`` file (loaded on ``device``).
        X: (n, d) encoded rows (``FeatureEncoder.transform``), held in memory.
        batch_size: rows per forward call, or several sizes: each is measured and the
            fastest counts (on a CPU 512 rows beat 4,096, the reverse on a GPU).
        device: where a model file is loaded ("cpu", "cuda", ...).
        repeats: passes over ``X``; the fastest counts (single passes on these shared cores
            varied by up to 40% within one run).

    Returns:
        n / seconds of the fastest pass (after one warm-up batch): the strictest reference.
    """
    import torch

    from decflow.model.estimator import DeepEmbeddedClustering
    from decflow.model.losses import soft_assignment
    from decflow.model.training import autocast

    est = (DeepEmbeddedClustering.load(model, device=device)
           if isinstance(model, (str, os.PathLike)) else model)
    encoder = est.autoencoder_.encoder.eval()
    dev = next(encoder.parameters()).device
    bf16 = _torch_info(est)["precision"] == "bfloat16"
    centers = torch.as_tensor(est.cluster_centers_, dtype=torch.float32, device=dev)
    mean = torch.as_tensor(est.scaler_mean_, dtype=torch.float32, device=dev)
    scale = float(est.scaler_scale_)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))

    def run(rows, size):
        for start in range(0, len(rows), size):
            with autocast(dev, bf16):
                z = encoder((rows[start:start + size].to(dev) - mean) / scale)
            z = z.float()
            conf, ids = soft_assignment(z, centers, est.alpha).max(dim=1)
            dist = (z - centers[ids]).norm(dim=1)
            ids.cpu(), conf.cpu(), dist.cpu()  # results leave the device, as in scoring

    best = 0.0
    with torch.inference_mode():
        for size in ((batch_size,) if isinstance(batch_size, int) else batch_size):
            run(Xt[:size], size)
            for _ in range(repeats):
                t0 = time.perf_counter()
                run(Xt, size)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                best = max(best, len(Xt) / (time.perf_counter() - t0))
    return best


# --- memory sampling ------------------------------------------------------------------------------

class RssSampler:
    """Peak RSS of a process and all its descendants, sampled every ``interval`` seconds, and
    the CPU seconds (user + system) each used, as of its last sample (a process that exits
    between two samples loses at most ``interval`` seconds of its count)."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict[int, dict] = {}  # pid -> {"role", "cmd", "peak_bytes", "cpu_s"}
        self.peak_sum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "RssSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        ps = self._psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except ps.Error:  # the root exited
            return
        total = 0
        for p in procs:
            try:
                with p.oneshot():
                    rss, cpu = p.memory_info().rss, p.cpu_times()
            except ps.Error:  # exited between listing and reading
                continue
            total += rss
            entry = self.peaks.setdefault(p.pid, {"role": "", "cmd": "", "peak_bytes": 0,
                                                  "cpu_s": 0.0})
            entry["peak_bytes"] = max(entry["peak_bytes"], rss)
            entry["cpu_s"] = cpu.user + cpu.system
            if not entry["cmd"]:  # empty while a process starts: read again next time
                try:
                    entry["cmd"] = " ".join(p.cmdline())[:160]
                except ps.Error:
                    pass
                entry["role"] = _role(entry["cmd"], p.pid == self.root.pid)
        self.peak_sum = max(self.peak_sum, total)

    def summary(self) -> dict:
        procs = sorted(self.peaks.items(), key=lambda kv: -kv[1]["peak_bytes"])
        cpu: dict[str, float] = {}
        for _, p in procs:
            cpu[p["role"]] = cpu.get(p["role"], 0.0) + p["cpu_s"]
        return {"peak_max_process_bytes": max((p["peak_bytes"] for _, p in procs), default=0),
                "peak_sum_bytes": self.peak_sum, "n_processes": len(procs),
                "cpu_s_by_role": cpu, "processes": [{"pid": pid, **p} for pid, p in procs]}


def _role(cmd: str, root: bool) -> str:
    if root:
        return "main"
    for needle, role in (("spawn_main", "multiprocessing child (Dask worker)"),
                         ("resource_tracker", "multiprocessing resource tracker"),
                         ("uvicorn", "Prefect server (ephemeral)")):
        if needle in cmd:
            return role
    return "other"


def run_measured(cmd: list[str], log: Path, env: dict) -> dict:
    """Run ``cmd``, sampling its process tree's RSS; output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", shlex.join(cmd), flush=True)
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        with RssSampler(proc.pid) as rss:
            rc = proc.wait()
        wall = time.perf_counter() - t0
    text = log.read_text()
    print(f"  exit {rc} after {wall:.1f} s; peak RSS max per process "
          f"{rss.summary()['peak_max_process_bytes'] / GiB:.2f} GiB (log {log})", flush=True)
    return {"cmd": shlex.join(cmd), "returncode": rc, "wall_s": wall, "log": str(log),
            "output_tail": text[-3000:], **rss.summary()}


# --- results --------------------------------------------------------------------------------------

class Results:
    """Result rows: figure, value, target (a bound on the ratio), ratio, machine, pass/miss."""

    def __init__(self, machine: str):
        self.machine = machine
        self.rows: list[dict] = []
        self.details: dict = {}
        self.errors: list[str] = []

    def add(self, figure: str, value: float | None, unit: str, *, ratio: float | None = None,
            op: str | None = None, bound: float | None = None, passed: bool | None = None,
            target: str | None = None, detail: str = "") -> None:
        if op is not None and ratio is not None:
            passed = bool(_OPS[op](ratio, bound))
        if op is not None:
            target = f"ratio {op} {bound:g}"
        self.rows.append({"figure": figure, "value": value, "unit": unit, "ratio": ratio,
                          "target": target, "passed": passed, "machine": self.machine,
                          "detail": detail, "part": _part_of(figure)})
        print(f"  {figure}: {_fmt(value, unit)}"
              + (f", ratio {ratio:.3f}" if ratio is not None else "")
              + (f" ({target}: {'pass' if passed else 'MISS'})" if target else ""), flush=True)

    def error(self, part: str, message: str) -> None:
        self.errors.append(f"{part}: {message}")
        self.add(f"{part} failed", None, "", passed=False, target="completes", detail=message)


_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "GiB":
        return f"{value:.2f} GiB"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:.4g} {unit}".strip()


# --- part a: k-means ------------------------------------------------------------------------------

def _mixture_block(n_total: int, chunk_rows: int, d: int, k: int, seed: int,
                   block_id=None) -> np.ndarray:
    """Rows of block ``block_id`` of an (n_total, d) float32 mixture of k Gaussians."""
    i = block_id[0]
    n = min(chunk_rows, n_total - i * chunk_rows)
    centers = np.random.default_rng([seed, 0]).normal(scale=3.0, size=(k, d))
    rng = np.random.default_rng([seed, 1, i])
    y = rng.integers(k, size=n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32)


def mixture_array(n: int, d: int, k: int, chunk_rows: int, seed: int):
    """A dask array (n, d) float32 whose blocks are drawn on the workers that compute them."""
    import dask.array as da

    rows = tuple(min(chunk_rows, n - s) for s in range(0, n, chunk_rows))
    return da.map_blocks(_mixture_block, chunks=(rows, (d,)), dtype=np.float32,
                         meta=np.empty((0, d), np.float32), n_total=n, chunk_rows=chunk_rows,
                         d=d, k=k, seed=seed)


def bench_kmeans(args, res: Results) -> None:
    import distributed
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from decflow.config import ComputeConfig
    from decflow.engine.compute import dask_client
    from decflow.engine.kmeans import kmeans_dask

    d, k, seed = args.kmeans_dims, args.kmeans_clusters, args.seed
    km = {"n_init": args.kmeans_n_init, "max_iter": args.kmeans_max_iter, "tol": args.kmeans_tol}
    out = res.details["kmeans"] = {"dims": d, "clusters": k, **km,
                                   "workers": args.workers, "threads_per_worker": 1}

    # The huge point first, while this process is small (its RSS is part of the tree).
    if args.kmeans_huge_rows:
        n = args.kmeans_huge_rows
        data_bytes = n * d * 4
        print(f"k-means, dask only: {n:,} x {d} float32 ({data_bytes / GiB:.2f} GiB), "
              f"{args.workers} workers with memory_limit={args.kmeans_memory_limit}", flush=True)
        scratch = Path(args.workdir) / "dask-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            with distributed.LocalCluster(
                    n_workers=args.workers, threads_per_worker=1, processes=True,
                    memory_limit=args.kmeans_memory_limit, host="127.0.0.1",
                    dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                    local_directory=str(scratch), silence_logs=logging.ERROR) as cluster, \
                    distributed.Client(cluster) as client, RssSampler(os.getpid()) as rss:
                r = kmeans_dask(mixture_array(n, d, k, args.kmeans_huge_chunk_rows, seed), k,
                                client=client, chunk_rows=args.kmeans_huge_chunk_rows,
                                random_state=seed, **km)
                wall = time.perf_counter() - t0
            mem = rss.summary()
            out["huge"] = {"rows": n, "data_bytes": data_bytes, "wall_s": wall,
                           "memory_limit": args.kmeans_memory_limit, "inertia": r.inertia,
                           "n_iter": r.n_iter, **mem}
            res.add(f"k-means {n:,} x {d}, dask only (workers limited to "
                    f"{args.kmeans_memory_limit}): completes, wall incl. generation", wall, "s",
                    passed=True, target="completes")
            res.add(f"k-means {n:,} x {d}: peak RSS max per process / data size",
                    mem["peak_max_process_bytes"] / GiB, "GiB",
                    ratio=mem["peak_max_process_bytes"] / data_bytes, op="<", bound=1.0,
                    detail=f"peak sum of {mem['n_processes']} processes "
                           f"{mem['peak_sum_bytes'] / GiB:.2f} GiB")
        except Exception as exc:  # report and go on with the other points
            res.error("k-means huge point", f"{type(exc).__name__}: {exc}")

    n = args.kmeans_rows
    print(f"k-means, dask vs sklearn: {n:,} x {d} float32", flush=True)
    with dask_client(ComputeConfig(n_workers=args.workers, threads_per_worker=1)) as client:
        X = client.persist(mixture_array(n, d, k, args.kmeans_chunk_rows, seed))
        distributed.wait(X)
        t0 = time.perf_counter()
        r = kmeans_dask(X, k, client=client, chunk_rows=args.kmeans_chunk_rows,
                        random_state=seed, **km)
        dask_s = time.perf_counter() - t0
        Xn = X.compute()  # the same rows, for sklearn
        del X
    threads = args.sklearn_threads or os.cpu_count()
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        sk = KMeans(k, random_state=seed, **km).fit(Xn)
        sk_s = time.perf_counter() - t0
    del Xn
    out["compare"] = {"rows": n, "dask": {"wall_s": dask_s, "inertia": r.inertia,
                                          "n_iter": r.n_iter, "inertias": r.inertias},
                      "sklearn": {"wall_s": sk_s, "inertia": float(sk.inertia_),
                                  "n_iter": int(sk.n_iter_), "threads": threads}}
    res.add(f"k-means {n:,} x {d} inertia, dask / sklearn", r.inertia, "",
            ratio=r.inertia / sk.inertia_, op="<=", bound=1.01,
            detail=f"sklearn {sk.inertia_:.6g}")
    res.add(f"k-means {n:,} x {d} wall, dask ({args.workers} workers x 1 thread) / sklearn "
            f"({threads} threads)", dask_s, "s", ratio=dask_s / sk_s, op="<=", bound=2.0,
            detail=f"sklearn {sk_s:.1f} s")


# --- part b: forward pass -------------------------------------------------------------------------

def bench_forward(args, res: Results) -> None:
    """Forward pass on one synthetic partition with a quickly fitted model (weights do not
    change the speed; the architecture is the pipeline's default)."""
    import pyarrow.parquet as pq

    from decflow.data.synthetic import generate_source, synthetic_config
    from decflow.model.estimator import DeepEmbeddedClustering
    from decflow.model.features import FeatureEncoder

    n = args.forward_rows
    uri = str(Path(args.workdir) / "forward" / "source")
    parts = generate_source(uri, rows=n, days=1, end_date=END_DATE, n_clusters=args.clusters,
                            rows_per_group=args.rows_per_group, seed=args.seed)
    frame = pq.read_table(parts[0].path).to_pandas()
    config = synthetic_config(uri, n_clusters=args.clusters)
    X = FeatureEncoder(config.features).fit_transform(frame)
    del frame
    m = config.model
    est = DeepEmbeddedClustering(m.n_clusters, n_components=m.n_components,
                                 hidden=tuple(m.hidden), pretrain_epochs=1, max_iter=20,
                                 init="k-means", n_init=1, device=_device(args),
                                 random_state=0).fit(X[:2000])
    rps = forward_rows_per_s(est, X, batch_size=args.batch_size)
    info = _torch_info(est)
    res.details["forward"] = {"rows": n, "features": int(X.shape[1]), "rows_per_s": rps,
                              "batch_size": args.batch_size, **info}
    res.add(f"forward pass, {n:,} x {X.shape[1]} rows in memory, one process "
            f"({info['device']}, {info['torch_threads']} torch threads, {info['precision']}, "
            f"the default inference_precision)", rps, "rows/s")
    if info["precision"] != "float32":  # what the default gains over float32, same run
        f32 = forward_rows_per_s(copy.deepcopy(est).set_params(inference_precision="float32"),
                                 X, batch_size=args.batch_size)
        res.details["forward"]["float32_rows_per_s"] = f32
        res.add(f"forward pass, same rows, float32 (inference_precision: float32): "
                f"{info['precision']} / float32", rps / f32, "x")


# --- the single writer ----------------------------------------------------------------------------

_WRITER_TABLE_ROWS = 200_000  # one chunk's labels (compute.chunk_rows)


_WRITER_SPEC = dict(model_name="scale", model_version="1", run_id="0" * 32,
                    labeled_at=dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc))


def writer_table(n: int, seed: int):
    """A chunk task's labels rows of ``n`` rows as scoring sends them (ids and scores; the
    flow's process adds the model columns, ``writer_rows``)."""
    import pandas as pd

    from decflow.data.label_store import scores_table

    rng = np.random.default_rng(seed)
    ids = pd.Series(np.arange(seed * n, (seed + 1) * n, dtype=np.int64))
    return scores_table(ids, rng.integers(0, 10, n), rng.random(n, dtype=np.float32),
                        rng.random(n, dtype=np.float32) * 5, id_column="id")


def writer_rows(table):
    """``table`` from ``writer_table`` as the flow's process writes it: with the model columns."""
    from decflow.data.label_store import with_model_columns

    return with_model_columns(table, **_WRITER_SPEC)


def _noop(i):
    return i


def bench_writer(args, res: Results) -> None:
    """Labels through one process: written alone, then gathered from the workers and written."""
    from decflow.config import ComputeConfig
    from decflow.data import partitioned
    from decflow.data.label_store import DICTIONARY_COLUMNS
    from decflow.engine.compute import dask_client

    def labels_writer(*a):  # as scoring writes labels
        return partitioned.PartitionWriter(*a, dictionary=DICTIONARY_COLUMNS)

    n_tables = max(1, args.writer_rows // _WRITER_TABLE_ROWS)
    rows = n_tables * _WRITER_TABLE_ROWS
    root = Path(args.workdir) / "writer"
    shutil.rmtree(root, ignore_errors=True)
    tables = [writer_table(_WRITER_TABLE_ROWS, i) for i in range(4)]
    t0 = time.perf_counter()
    with labels_writer(str(root / "alone"), "ds", END_DATE) as w:
        for i in range(n_tables):
            w.write(writer_rows(tables[i % len(tables)]))
    alone_s = time.perf_counter() - t0
    size = Path(w.path).stat().st_size
    del tables
    res.details["writer"] = {"rows": rows, "table_rows": _WRITER_TABLE_ROWS,
                             "file_bytes": size, "alone_s": alone_s}
    res.add(f"single writer alone: {rows:,} labels rows in {n_tables} tables of "
            f"{_WRITER_TABLE_ROWS:,}, model columns added and written (PartitionWriter, one "
            f"process)", rows / alone_s, "rows/s",
            detail=f"{size / 2**20 / alone_s:,.1f} MiB/s of Parquet ({size / rows:.1f} bytes "
                   f"a row); {alone_s:.1f} s")

    compute = ComputeConfig(n_workers=args.workers, threads_per_worker=1)
    with dask_client(compute) as client:
        client.submit(writer_table, 10, 0).result()  # workers started and imported
        t0, cpu0 = time.perf_counter(), time.process_time()
        in_flight, done = [], 0
        with labels_writer(str(root / "gathered"), "ds", END_DATE) as w:
            for i in range(n_tables):
                in_flight.append(client.submit(writer_table, _WRITER_TABLE_ROWS, i, pure=False))
                if len(in_flight) >= 2 * args.workers:
                    w.write(writer_rows(in_flight.pop(0).result()))
                    done += 1
            for fut in in_flight:
                w.write(writer_rows(fut.result()))
        gathered_s, client_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        # the scheduler's cost per task: no-op tasks, submitted and gathered as chunks are
        n_tasks = 2_000 if args.quick else 10_000
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(n_tasks), pure=False))
        tasks_s = time.perf_counter() - t0
    res.details["writer"].update(gathered_s=gathered_s, client_cpu_s=client_cpu_s)
    res.details["scheduler"] = {"tasks": n_tasks, "seconds": tasks_s}
    res.add(f"scheduler: {n_tasks:,} no-op tasks submitted and gathered ({args.workers} "
            f"workers)", n_tasks / tasks_s, "tasks/s",
            detail=f"{1e3 * tasks_s / n_tasks:.2f} ms a task; a chunk of 200,000 rows is 4 "
                   f"tasks and one more per id bucket")
    res.add(f"single writer, labels rows' own columns made on {args.workers} workers, gathered, "
            f"completed and written by the client: {rows:,} rows", rows / gathered_s, "rows/s",
            detail=f"{size / 2**20 / gathered_s:,.1f} MiB/s of Parquet; {gathered_s:.1f} s "
                   f"(workers make random labels: no model, no reading)")
    res.add(f"single writer, CPU of the client's process a row while gathering, completing and "
            f"writing {rows:,} rows (its Dask scheduler included)", client_cpu_s / rows * 1e6,
            "us/row", detail=f"{client_cpu_s:.1f} CPU s in {gathered_s:.1f} s: with a core of "
                             f"its own it takes in at most {rows / client_cpu_s:,.0f} rows/s")


def _device(args) -> str:
    import torch

    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def _torch_info(est) -> dict:
    import torch

    from decflow.model.training import uses_bf16

    dev = next(est.autoencoder_.parameters()).device
    return {"device": str(dev), "torch_threads": torch.get_num_threads(),
            "precision": "bfloat16" if uses_bf16(dev, est.inference_precision) else "float32"}


def _label_agreement(res: "Results", est, X) -> None:
    """The share of rows whose label the model's scoring precision moves against float32
    (the trained model of the score runs, rows of the small table)."""
    precision = _torch_info(est)["precision"]
    if precision == "float32":
        return
    ids, _, dist = est.assign(X)
    ids32, _, dist32 = copy.deepcopy(est).set_params(inference_precision="float32").assign(X)
    moved = float(np.mean(ids != ids32))
    rel = np.abs(dist - dist32) / np.maximum(dist32, 1e-12)
    res.details["label_agreement"] = {"rows": len(X), "precision": precision,
                                      "labels_moved": moved,
                                      "distance_rel_diff_median": float(np.median(rel)),
                                      "distance_rel_diff_p99": float(np.quantile(rel, 0.99))}
    res.add(f"labels moved by {precision} scoring against float32, {len(X):,} rows of the "
            f"small table, trained model (distance to the centroid: relative difference "
            f"median {np.median(rel):.2%}, 99th percentile {np.quantile(rel, 0.99):.2%})",
            moved, "share")


# --- parts c: score and recluster through the CLI -------------------------------------------------

def pipeline_config(args, source_uri: str, labels_uri: str):
    """The config of every score/recluster run: the one place to adjust settings.

    Both sizes share one home, so one MLflow store (the small run's model scores both tables);
    labels go to a folder per size. Training is bounded (``max_train_rows``, fixed budgets, no
    warm start) so that it costs the same at every size.
    """
    import yaml

    from decflow.config import PipelineConfig
    from decflow.data.synthetic import synthetic_config

    config = synthetic_config(
        source_uri, home=str(Path(args.workdir) / "home"), n_clusters=args.clusters,
        window_days=args.days,
        registry={"model_name": "scale"},
        labels={"uri": labels_uri},
        train={"max_train_rows": args.max_train_rows, "pretrain_epochs": args.pretrain_epochs,
               "max_iter": args.finetune_max_iter, "warm_start": False,
               "device": args.device},
        compute={"n_workers": args.workers, "threads_per_worker": 1},
    )
    data = config.model_dump(mode="json")
    for item in args.set:
        key, _, raw = item.partition("=")
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw)
    return PipelineConfig.model_validate(data)


def _source(args, size: str, rows: int, days: int | None = None) -> dict:
    """Generate (or reuse, when the same settings made it) the ``size`` table."""
    from decflow.data.synthetic import generate_source

    base = Path(args.workdir) / "sources"
    uri = str(base / size)
    days = days or args.days
    spec = {"rows": rows, "days": days, "end_date": END_DATE.isoformat(),
            "n_clusters": args.clusters, "rows_per_group": args.rows_per_group,
            "seed": args.seed}
    marker = base / f"{size}.json"
    if not (marker.exists() and json.loads(marker.read_text()) == spec):
        marker.unlink(missing_ok=True)
        shutil.rmtree(uri, ignore_errors=True)
        t0 = time.perf_counter()
        generate_source(uri, **{**spec, "end_date": END_DATE})
        print(f"generated {rows:,} rows in {days} partitions at {uri} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        marker.write_text(json.dumps(spec))
    part = Path(uri) / f"ds={END_DATE.isoformat()}" / "part-0.parquet"
    import pyarrow.parquet as pq

    return {"uri": uri, "rows": rows, "partition": str(part),
            "partition_rows": pq.ParquetFile(part).metadata.num_rows}


def _cli_env(args) -> dict:
    from decflow.environment import quiet_defaults

    env = quiet_defaults(dict(os.environ))
    env["PREFECT_HOME"] = str(Path(args.workdir) / "home" / "prefect")
    return env


def bench_pipeline(args, res: Results, parts: list[str]) -> None:
    """recluster small (registers the model) -> score small, large -> recluster large."""
    from decflow.config import dump_config
    from decflow.registry.versions import get_version, load_components

    work = Path(args.workdir)
    shutil.rmtree(work / "home", ignore_errors=True)  # a fresh registry, labels and Prefect db
    (work / "home" / "prefect").mkdir(parents=True)
    decflow = str(Path(sys.executable).with_name("decflow"))
    env = _cli_env(args)
    sizes = {"small": args.rows_small, "large": args.rows_large}
    runs = res.details.setdefault("runs", {})
    srcs, cfgs = {}, {}
    for size, rows in sizes.items():
        srcs[size] = _source(args, size, rows)
        config = pipeline_config(args, srcs[size]["uri"], str(work / "home" / f"labels-{size}"))
        cfgs[size] = work / f"config-{size}.yaml"
        cfgs[size].write_text(dump_config(config))
    res.details["sources"] = srcs
    day = END_DATE.isoformat()

    tracking_uri = f"sqlite:///{(work / 'home' / 'mlflow.db').resolve()}"

    def recluster(size):
        r = runs[f"recluster-{size}"] = run_measured(
            [decflow, "run", "-c", str(cfgs[size]), "--run-date", day],
            work / "logs" / f"recluster-{size}.log", env)
        if r["returncode"]:
            res.error(f"recluster ({size})", f"exit {r['returncode']}; see {r['log']}")
        else:
            r["phases_s"] = _training_phases(tracking_uri)
        return r

    small = recluster("small")
    if small["returncode"]:
        return
    mv = (get_version(tracking_uri, "scale", "champion")
          or get_version(tracking_uri, "scale", "challenger"))
    version = str(mv.version)
    res.details["model_version"] = version

    if "score" in parts:
        # Score + write-back of every row of the table: `decflow backfill` over all its
        # partitions with the small run's model (chunks of all partitions share the cluster).
        encoder, est = load_components(tracking_uri, "scale", version, device=_device(args))
        first = (END_DATE - dt.timedelta(days=args.days - 1)).isoformat()
        import pyarrow.parquet as pq

        for size in sizes:
            # The reference: the fastest forward pass over rows of this table, measured before
            # and after the run (this machine's speed drifts by up to a third for minutes: one
            # slow reference made a run look faster than its forward pass).
            pf = pq.ParquetFile(srcs[size]["partition"])
            rows = min(args.forward_rows, pf.metadata.num_rows)
            X = encoder.transform(next(pf.iter_batches(batch_size=rows)).to_pandas())
            before = forward_rows_per_s(est, X, batch_size=args.batch_size)
            r = runs[f"score-{size}"] = run_measured(
                [decflow, "backfill", "-c", str(cfgs[size]), "--start", first, "--end", day,
                 "--model", version, "--force"], work / "logs" / f"score-{size}.log", env)
            after = forward_rows_per_s(est, X, batch_size=args.batch_size)
            if size == "small":
                X_small = X
                _label_agreement(res, est, X)
            del X
            r["forward_rows_per_s_before_after"] = [before, after]
            if r["returncode"]:
                res.error(f"score ({size})", f"exit {r['returncode']}; see {r['log']}")
                continue
            n = srcs[size]["rows"]
            # per-date lines (the flow's log repeats them: keep one per date)
            done = dict(((d, (int(a), float(b))) for d, a, b in re.findall(
                r"^(\d{4}-\d\d-\d\d)\s+labelled\s+(\d+) rows\s+([\d.]+) s",
                Path(r["log"]).read_text(), re.M)))
            r["labels_written"] = sum(a for a, _ in done.values())
            r["labelling_s"] = sum(b for _, b in done.values())
            fwd = r["forward_rows_per_s"] = max(before, after)
            rps = r["rows_per_s"] = n / r["labelling_s"] if r["labelling_s"] else 0.0
            res.add(f"score + write-back, {n:,} rows in {args.days} partitions ({size}): "
                    f"labelling rows/s / forward pass", rps, "rows/s", ratio=rps / fwd,
                    op=">=", bound=0.75 if size == "small" else 0.85,
                    detail=f"forward {fwd:,.0f} rows/s on {rows:,} of the rows, the faster of "
                           f"{before:,.0f} before and {after:,.0f} after the run; labelling "
                           f"{r['labelling_s']:.1f} s (Dask cluster start, validation, "
                           f"scoring, write-back); labels written {r['labels_written']:,}")
            cli = n / r["wall_s"]
            res.add(f"score + write-back, {n:,} rows ({size}): whole CLI run rows/s / forward "
                    f"pass", cli, "rows/s", ratio=cli / fwd, op=">=",
                    bound=0.60 if size == "small" else 0.80,
                    detail=f"wall {r['wall_s']:.1f} s incl. process start, Prefect's "
                           f"ephemeral server and model download")
            _cpu_row(res, f"score + write-back, {n:,} rows ({size})", r, n, fwd)
            _steps_row(res, f"score + write-back, {n:,} rows ({size})", r, n, fwd,
                       args.workers)
        _memory_rows(res, runs, "score")
        # the same model on one partition of rows_small rows, as `decflow score` labels a night
        night = _source(args, f"night-{args.rows_small}", args.rows_small, days=1)
        config = pipeline_config(args, night["uri"], str(work / "home" / "labels-night"))
        cfg = work / "config-night.yaml"
        cfg.write_text(dump_config(config.model_copy(update={"source": config.source.model_copy(
            update={"window_days": 1})})))
        # Twice, the faster counting (as the forward reference is the fastest of its passes),
        # taking turns with the scorer before the scale-out when it is given (--old-scorer).
        old = OldScorer(args, config, night, day, env) if args.old_scorer else None
        tries, old_tries = [], []
        for i in range(2):
            tries.append(run_measured(
                [decflow, "score", "-c", str(cfg), "--run-date", day, "--model", version],
                work / "logs" / f"score-night-{i + 1}.log", env))
            if old and old.ready():
                old_tries.append(old.score(i + 1))
        r = runs["score-night"] = _fastest(tries) or tries[0]
        fwd = runs.get("score-small", {}).get("forward_rows_per_s")
        if fwd:  # and once more after these runs
            fwd = r["forward_rows_per_s"] = max(fwd, forward_rows_per_s(
                est, X_small, batch_size=args.batch_size))
        if r["returncode"]:
            res.error("score (one partition)", f"exit {r['returncode']}; see {r['log']}")
        elif fwd:
            cli = args.rows_small / r["wall_s"]
            res.add(f"decflow score of one {args.rows_small:,}-row partition: whole CLI rows/s "
                    f"/ forward pass", cli, "rows/s", ratio=cli / fwd, op=">=", bound=0.60,
                    detail=f"wall {r['wall_s']:.1f} s, the faster of {_walls(r)} s, incl. process "
                           f"start, Prefect's ephemeral server and model download; forward "
                           f"{fwd:,.0f} rows/s")
            _cpu_row(res, f"decflow score of one {args.rows_small:,}-row partition", r,
                     args.rows_small, fwd)
            _steps_row(res, f"decflow score of one {args.rows_small:,}-row partition", r,
                       args.rows_small, fwd, args.workers)
            best = _fastest(old_tries)
            if best:
                runs["score-night-old"] = best
                old_rps = args.rows_small / best["wall_s"]
                res.add(f"decflow score of one {args.rows_small:,}-row partition / the "
                        f"single-process scorer before the scale-out ({OLD_SCORER_COMMIT}), "
                        f"whole commands in this run", cli, "rows/s", ratio=cli / old_rps,
                        op=">", bound=1.0,
                        detail=f"before the scale-out {old_rps:,.0f} rows/s (wall "
                               f"{best['wall_s']:.1f} s, the faster of {_walls(best)} s, "
                               f"taking turns with today's; peak RSS "
                               f"{best['peak_max_process_bytes'] / GiB:.2f} GiB per process)")
            elif old:
                res.error("score before the scale-out", old.failure(old_tries))
            else:
                res.add(f"decflow score of one {args.rows_small:,}-row partition / the "
                        f"single-process scorer before the scale-out (25,500 rows/s, measured "
                        f"on this machine type, not re-run here: see --old-scorer)", cli,
                        "rows/s", ratio=cli / 25_500, op=">", bound=1.0)

    if "recluster" in parts:
        large = recluster("large")
        if not large["returncode"]:
            res.add("recluster wall, large / small", large["wall_s"], "s",
                    ratio=large["wall_s"] / small["wall_s"], op="<=", bound=1.5,
                    detail=f"small {small['wall_s']:.1f} s; {args.rows_small:,} vs "
                           f"{args.rows_large:,} rows, max_train_rows {args.max_train_rows:,}")
            _memory_rows(res, runs, "recluster")
            ps, pl = small["phases_s"], large["phases_s"]
            train_s, train_l = sum(ps.values()), sum(pl.values())
            res.add("recluster training (pretrain + init + fine-tune), large / small", train_l,
                    "s", ratio=train_l / train_s, op="<=", bound=1.5,
                    detail=f"small {train_s:.1f} s; large phases "
                           + ", ".join(f"{k} {v:.1f} s" for k, v in pl.items()))


def _fastest(tries: list[dict]) -> dict | None:
    """The fastest of ``tries`` that succeeded (None: none did), with every try's wall."""
    ok = [t for t in tries if not t["returncode"]]
    if not ok:
        return None
    best = min(ok, key=lambda t: t["wall_s"])
    best["walls_s"] = [t["wall_s"] for t in tries]
    return best


def _walls(run: dict) -> str:
    return " and ".join(f"{w:.1f}" for w in run["walls_s"])


OLD_SCORER_COMMIT = "07ee55f"  # the last commit before scoring moved onto Dask (2b8d238)


class OldScorer:
    """``decflow score`` as it was before the scale-out: one process reads, validates, scores
    and writes the whole partition. ``--old-scorer`` names the ``decflow`` command of an install
    of commit 07ee55f in a venv of its own, e.g.::

        git worktree add /tmp/old07 07ee55f && python3 -m venv /tmp/old07/.venv
        /tmp/old07/.venv/bin/pip install torch==2.13.0 -e /tmp/old07

    Its config schema and registry differ from today's, so it gets a home of its own with a
    model that its own ``decflow run`` trains on the same partition (small and fast: k-means
    initialisation, 1 epoch, 20 fine-tuning iterations, the same 500-500-2000-10 network as
    today's model; not measured). Scoring costs do not depend on how the model was trained.
    """

    def __init__(self, args, config, night: dict, day: str, env: dict):
        self.exe, self.day = args.old_scorer, day
        self.work = Path(args.workdir) / "old"
        self.config = self.work / "config.yaml"
        self.env = {**env, "PREFECT_HOME": str(self.work / "home" / "prefect")}
        spec = {"commit": OLD_SCORER_COMMIT, "exe": self.exe, "source": night["uri"],
                "rows": night["rows"], "clusters": args.clusters}
        marker = self.work / "model.json"
        self.error = None
        if marker.exists() and json.loads(marker.read_text()) == spec:
            return
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "home" / "prefect").mkdir(parents=True)
        # the columns of today's config; the settings added since 07ee55f left out
        features = config.features.model_dump(
            mode="json", include={"numeric", "categorical", "vector", "scale_vectors"})
        self.config.write_text(json.dumps({  # YAML's subset: the old loader reads it
            "home": str(self.work / "home"),
            "source": {"uri": night["uri"], "date_column": "ds", "id_column": "id",
                       "label_column": "cluster", "window_days": 1},
            "features": features,
            "model": {"n_clusters": args.clusters, "n_components": 10,
                      "hidden": [500, 500, 2000], "init": "k-means"},
            "train": {"pretrain_epochs": 1, "max_iter": 20, "max_train_rows": 20_000,
                      "warm_start": False, "device": "cpu"},
            "registry": {"model_name": "scale-old"},
            "promotion": {"min_cluster_ratio": 0.0},
            "compute": {"n_workers": args.workers, "threads_per_worker": 1}}, indent=1))
        trained = run_measured([self.exe, "run", "-c", str(self.config), "--run-date", day],
                               Path(args.workdir) / "logs" / "old-run.log", self.env)
        if trained["returncode"]:
            self.error = f"its decflow run exited {trained['returncode']}; see {trained['log']}"
        else:
            marker.write_text(json.dumps(spec))

    def ready(self) -> bool:
        return self.error is None

    def score(self, i: int) -> dict:
        return run_measured([self.exe, "score", "-c", str(self.config), "--date", self.day,
                             "--model-version", "champion"],
                            self.work.parent / "logs" / f"score-night-old-{i}.log",
                            self.env)

    def failure(self, tries: list[dict]) -> str:
        if self.error:
            return self.error
        return "; ".join(f"exit {t['returncode']}, see {t['log']}" for t in tries)


# The nightly's phases: each ends when its last task finishes (the flow's log).
NIGHT_PHASES = (("validation + sample", "validate_features"), ("embedding", "embed_features"),
                ("pretrain", "pretrain_autoencoder"), ("init", "init_centroids"),
                ("fine-tune", "fit_dec"), ("evaluation + profiles", "profile_clusters"),
                ("registration + gate", "snapshot_night"), ("labelling", "label_partition"),
                ("drift + report", "publish_report"))


def night_phases(log: str) -> dict[str, float]:
    """Seconds of each phase of a nightly run, from its log's task lines; "start" is from the
    flow run's first line to the first task, "end" the rest to the last line."""
    stamp = r"^(\d\d):(\d\d):(\d\d\.\d+) \| "

    def seconds(m):
        return int(m[0]) * 3600 + int(m[1]) * 60 + float(m[2])
    begin = re.search(stamp + r".*Beginning flow run", log, re.M)
    done = {name: seconds(m) for m, name in (
        (m.groups()[:3], m.group(4)) for m in re.finditer(
            stamp + r".*Task run '(\w+)-\w+' - Finished in state Completed", log, re.M))}
    end = re.search(stamp + r".*Flow run .* - Finished in state", log, re.M)
    if not (begin and end and all(task in done for _, task in NIGHT_PHASES)):
        return {}
    t = seconds(begin.groups())
    prev = done.get("scan_night", t)
    phases = {"start": prev - t}
    for name, task in NIGHT_PHASES:
        phases[name] = done[task] - prev
        prev = done[task]
    phases["end"] = seconds(end.groups()) - prev
    return {k: round(v, 1) for k, v in phases.items()}


def bench_nightly(args, res: Results) -> None:
    """``decflow run`` with the default config at each of ``--nightly-rows`` (one partition)."""
    from decflow.config import dump_config
    from decflow.data.synthetic import synthetic_config

    work = Path(args.workdir) / "nightly"
    decflow = str(Path(sys.executable).with_name("decflow"))
    sizes = [int(x) for x in str(args.nightly_rows).split(",") if x.strip()]
    runs = res.details.setdefault("nightly", {})
    res.details["nightly_warm_up_s"] = warm_umap_cache(args)
    for rows in sizes:
        src = _source(args, f"night-{rows}", rows, days=1)
        home = work / f"home-{rows}"
        shutil.rmtree(home, ignore_errors=True)
        (home / "prefect").mkdir(parents=True)
        config = synthetic_config(src["uri"], home=str(home), n_clusters=args.clusters,
                                  window_days=1, registry={"model_name": "nightly"})
        path = work / f"config-{rows}.yaml"
        path.write_text(dump_config(config))
        env = {**_cli_env(args), "PREFECT_HOME": str(home / "prefect")}
        r = runs[str(rows)] = run_measured(
            [decflow, "run", "-c", str(path), "--run-date", END_DATE.isoformat()],
            work / "logs" / f"nightly-{rows}.log", env)
        if r["returncode"]:
            res.error(f"nightly ({rows:,} rows)", f"exit {r['returncode']}; see {r['log']}")
            continue
        r["phases_s"] = night_phases(Path(r["log"]).read_text())
        res.add(f"default nightly, {rows:,} rows in one partition (defaults: max_train_rows "
                f"{config.train.max_train_rows:,}, {config.model.init_views} views on "
                f"{config.model.init_view_rows:,} rows): wall", r["wall_s"] / 60, "min",
                detail="phases s: " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                r["phases_s"].items()))
    done = [rows for rows in sizes if not runs[str(rows)]["returncode"]]
    if len(done) >= 2:
        small, large = runs[str(done[0])], runs[str(done[-1])]
        res.add(f"default nightly, {done[-1]:,} rows: wall / 15 minutes", large["wall_s"] / 60,
                "min", ratio=large["wall_s"] / 900, op="<=", bound=1.0,
                detail=f"2 CPU cores, peak RSS max per process "
                       f"{large['peak_max_process_bytes'] / GiB:.2f} GiB")
        res.add(f"default nightly wall, {done[-1]:,} / {done[0]:,} rows", large["wall_s"], "s",
                ratio=large["wall_s"] / small["wall_s"], op="<=", bound=1.3,
                detail=f"{done[0]:,} rows {small['wall_s']:.1f} s")


# A UMAP view fitted and placed in a fresh process, as the initialisation's workers do.
_WARM_UMAP = """
import numpy as np
from decflow.model.initialization import fit_view, transform_block
S = np.random.default_rng(0).normal(size=(5000, 10)).astype(np.float32)
reducer, _ = fit_view(S, 10, 0, 20)
transform_block(reducer, S[:100])
"""


def warm_umap_cache(args) -> float:
    """Seconds to fill numba's on-disk cache of UMAP's code (``decflow.model.compiled``) in a
    subprocess, before any night is timed. Only a machine's first process that fits a view
    compiles that code (measured on a fresh machine: the first night's initialisation took
    355 s against 222 s for the next, larger one); every night after finds it compiled. So
    every measured night starts as a machine's second night does, and the first night's
    extra cost is this figure."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _WARM_UMAP], check=True, env=_cli_env(args),
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    print(f"  UMAP's compiled code cached for the nights: {seconds:.1f} s", flush=True)
    return seconds


def _training_phases(tracking_uri: str) -> dict:
    """Seconds of the training phases of the newest MLflow run (its logged metrics)."""
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("decflow").experiment_id],
        order_by=["attributes.start_time DESC"], max_results=1)[0]
    return {k.removeprefix("seconds_"): v for k, v in run.data.metrics.items()
            if k in ("seconds_pretrain", "seconds_init", "seconds_finetune")}


_ROLE_NAMES = {"multiprocessing child (Dask worker)": "Dask workers", "main": "the command",
               "Prefect server (ephemeral)": "Prefect's server"}  # other roles: as named


def _cpu_row(res: Results, what: str, run: dict, rows: int, fwd: float) -> None:
    """Where the cores went in ``run``: the forward pass's share of every CPU second the
    command's processes used, beside how busy the cores were. The whole command's rate over
    the forward pass's is the product of the two: a miss from idle cores shows in the second,
    one from work besides the forward pass (start-up, validation, I/O, Dask, Prefect) in the
    first."""
    cpu = run.get("cpu_s_by_role")
    if not cpu or not fwd:
        return
    cores = len(os.sched_getaffinity(0))  # the forward reference ran on all of them
    forward_s = rows / fwd * cores
    total = sum(cpu.values())
    busy = total / (run["wall_s"] * cores)
    parts = ", ".join(f"{_ROLE_NAMES.get(k, k)} {v:.1f}" for k, v in
                      sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    res.add(f"{what}: forward-pass work / CPU seconds used by the whole command", forward_s,
            "CPU s", ratio=forward_s / total,
            detail=f"{rows:,} rows at the forward reference ({fwd:,.0f} rows/s on {cores} "
                   f"cores); {total:.1f} CPU s used ({parts}) in {run['wall_s']:.1f} s of "
                   f"wall: the cores {busy:.0%} busy")


_STEPS_LINE = re.compile(r"rows validated, \d+ labels written to \S+; tasks [\d.]+ s: (.*)$",
                         re.M)


def task_steps(log: str) -> dict[str, float]:
    """The chunk tasks' seconds by step, added up over the partitions a run's log reports
    (``decflow.engine.partitions.describe_steps``). The flow's log may print a line twice:
    identical lines count once (each names its partition's path and its own timings)."""
    seen, steps = set(), {}
    for m in _STEPS_LINE.finditer(log):
        if m.group(0) in seen:
            continue
        seen.add(m.group(0))
        for name, secs in re.findall(r"([a-z ]+?) ([\d.]+) s \(\d+%\)", m.group(1)):
            steps[name.strip()] = steps.get(name.strip(), 0.0) + float(secs)
    return steps


def _steps_row(res: Results, what: str, run: dict, rows: int, fwd: float,
               threads: int) -> None:
    """Where the chunk tasks' time went (their own timing, logged per partition; ``threads``:
    the cluster's worker threads): the model's share is the most labelling / forward can reach
    with the rest of the run free, on workers whose forward pass runs as fast as the
    reference's."""
    steps = run["task_steps"] = task_steps(Path(run["log"]).read_text())
    model, total = steps.get("model"), sum(steps.values())
    if not model:
        return
    per_row = ", ".join(f"{k} {v / rows * 1e6:.2f}" for k, v in
                        sorted(steps.items(), key=lambda kv: -kv[1]))
    res.add(f"{what}: the model's share of the chunk tasks' time", model, "s",
            ratio=model / total,
            detail=f"tasks {total:.1f} s on {threads} worker threads; µs a row: {per_row}; "
                   f"the model step ran {rows / model * threads:,.0f} rows/s on {threads} "
                   f"threads against the forward reference's {fwd:,.0f}")


def _memory_rows(res: Results, runs: dict, kind: str) -> None:
    small, large = runs.get(f"{kind}-small"), runs.get(f"{kind}-large")
    if not (small and large) or small["returncode"] or large["returncode"]:
        return
    s, lg = small["peak_max_process_bytes"], large["peak_max_process_bytes"]
    res.add(f"{kind} peak RSS, max per process (large) / 2 GiB", lg / GiB, "GiB",
            ratio=lg / (2 * GiB), op="<=", bound=1.0,
            detail=f"sum over {large['n_processes']} processes "
                   f"{large['peak_sum_bytes'] / GiB:.2f} GiB")
    res.add(f"{kind} peak RSS, max per process, large / small", lg / GiB, "GiB",
            ratio=lg / s, op="<=", bound=1.25, detail=f"small {s / GiB:.2f} GiB")


# --- machine, output ------------------------------------------------------------------------------

def machine_info() -> dict:
    def proc_field(path, key):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return None
        return None

    mem = proc_field("/proc/meminfo", "MemTotal")
    ram = int(mem.split()[0]) * 1024 / GiB if mem else None
    try:
        torch_version = _dist_version("torch")
    except PackageNotFoundError:
        torch_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=ROOT, capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"cpu": proc_field("/proc/cpuinfo", "model name") or platform.processor(),
            "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "ram_gib": round(ram, 1) if ram else None, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch_version,
            "git_commit": commit, "git_dirty": dirty}


def to_markdown(out: dict) -> str:
    m = out["machine"]
    lines = [f"# Scale benchmark ({out['date_utc']})", "",
             f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
             f"{m['ram_gib']} GiB RAM; {m['platform']}",
             f"- python {m['python']}, torch {m['torch']}, commit {m['git_commit']}"
             + (" (uncommitted changes)" if m["git_dirty"] else ""),
             f"- command: `{out['command']}`", "",
             "| figure | value | target | ratio | machine | result |",
             "|---|---|---|---|---|---|"]
    for r in out["rows"]:
        result = "info" if r["passed"] is None else ("pass" if r["passed"] else "**miss**")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        detail = f" ({r['detail']})" if r["detail"] else ""
        if r.get("measured"):
            detail += f" [measured {r['measured']}, an earlier run]"
        lines.append(f"| {r['figure']}{detail} | {_fmt(r['value'], r['unit'])} | "
                     f"{r['target'] or '-'} | {ratio} | {r['machine']} | {result} |")
    runs = out["details"].get("runs", {})
    if runs:
        lines += ["", "Peak RSS per process (largest five per run):", "",
                  "| run | wall s | peak sum GiB | process (command lines in the JSON) "
                  "| peak GiB |", "|---|---|---|---|---|"]
        for name, r in runs.items():
            for i, p in enumerate(r["processes"][:5]):
                head = (f"| {name} | {r['wall_s']:.1f} | {r['peak_sum_bytes'] / GiB:.2f} "
                        if i == 0 else "| | | ")
                lines.append(f"{head}| {p['role']} | {p['peak_bytes'] / GiB:.2f} |")
    if out["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in out["errors"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    ap.add_argument("--workdir", default="/tmp/decflow-scale",
                    help="sources, the pipeline's home (MLflow, labels, Prefect), logs")
    ap.add_argument("--out", default=None,
                    help="output path without suffix, .json and .md are written (default: "
                         "benchmarks/results/scale; with --quick: WORKDIR/scale-quick)")
    size = ap.add_argument_group("sizes (defaults: full benchmark, or tiny with --quick)")
    for name, help_ in (("rows_small", "rows of the small table"),
                        ("rows_large", "rows of the large table"),
                        ("days", "partitions of each table"),
                        ("rows_per_group", "Parquet row group size of the generated tables"),
                        ("kmeans_rows", "rows of the dask vs sklearn comparison"),
                        ("kmeans_huge_rows", "rows of the dask-only point (0: skip)"),
                        ("kmeans_chunk_rows", "rows per dask partition (comparison; 40 MB at "
                                              "1M x 10)"),
                        ("kmeans_huge_chunk_rows", "rows per dask partition (dask-only point: "
                                                   "small pieces to spill under the limit)"),
                        ("kmeans_max_iter", "Lloyd iterations at most (both)"),
                        ("forward_rows", "rows of the standalone forward part"),
                        ("writer_rows", "labels rows of the single-writer part"),
                        ("max_train_rows", "train.max_train_rows of the recluster runs"),
                        ("pretrain_epochs", "train.pretrain_epochs of the recluster runs"),
                        ("finetune_max_iter", "train.max_iter of the recluster runs")):
        size.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                          help=f"{help_} (default {FULL[name]:,}; quick {QUICK[name]:,})")
    ap.add_argument("--nightly-rows", default=None,
                    help=f"comma list: rows of the default-config nightly tables (default "
                         f"{FULL['nightly_rows']}; quick {QUICK['nightly_rows']})")
    ap.add_argument("--kmeans-dims", type=int, default=10)
    ap.add_argument("--kmeans-clusters", type=int, default=10)
    ap.add_argument("--kmeans-n-init", type=int, default=3)
    ap.add_argument("--kmeans-tol", type=float, default=1e-4)
    ap.add_argument("--kmeans-memory-limit", default="1.5GiB",
                    help="memory_limit of each worker at the huge point")
    ap.add_argument("--workers", type=int, default=2,
                    help="Dask workers (1 thread each) for k-means and the pipeline runs")
    ap.add_argument("--sklearn-threads", type=int, default=None,
                    help="threads of sklearn's KMeans (default: --workers, the same cores; "
                         "0: all cores)")
    ap.add_argument("--clusters", type=int, default=10, help="clusters of the synthetic tables")
    ap.add_argument("--batch-size", type=lambda v: tuple(int(b) for b in v.split(",")),
                    default=(512, 4096), help="rows per forward call of the reference forward "
                    "pass; several (comma-separated): the fastest counts (default 512,4096)")
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    ap.add_argument("--old-scorer", default=None, metavar="PATH/decflow",
                    help="the decflow command of an install of 07ee55f, the scorer before the "
                         "scale-out: it scores the same partition in this run, taking turns "
                         "with today's (see OldScorer); without it, its 25,500 rows/s measured "
                         "earlier stands in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra config override for the pipeline runs (YAML value), repeatable")
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = str(Path(args.workdir) / "scale-quick" if args.quick
                       else HERE / "results" / "scale")
    if args.sklearn_threads is None:
        args.sklearn_threads = args.workers
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {PARTS}")
    if args.rows_small < args.days or args.rows_large < args.days:
        ap.error(f"--rows-small and --rows-large must be at least --days {args.days}")
    args.parts = parts
    return args


_PART_PREFIXES = (("k-means", "kmeans"), ("forward pass", "forward"), ("single writer", "writer"),
                  ("scheduler", "writer"), ("score", "score"), ("decflow score", "score"),
                  ("recluster", "recluster"), ("default nightly", "nightly"))


def _part_of(figure: str) -> str:
    return next((part for prefix, part in _PART_PREFIXES if figure.startswith(prefix)), "other")


def keep_other_parts(path: Path, out: dict, parts: list[str]) -> None:
    """Rows of the parts not run now, carried over from the results file already at ``path``
    (each marked with the date it was measured), so one file holds every part's latest rows."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    kept = [{**r, "measured": r.get("measured") or old["date_utc"]} for r in old["rows"]
            if (r.get("part") or _part_of(r["figure"])) not in parts]
    out["rows"] = kept + out["rows"]
    out["carried_over"] = sorted({r["measured"] for r in kept})


def _guarded(name: str, bench, *args) -> None:
    """Run one part; a failure is reported as a row and the other parts still run."""
    res = args[1]
    try:
        bench(*args)
    except Exception as exc:
        traceback.print_exc()
        res.error(name, f"{type(exc).__name__}: {exc}")


def main(argv=None) -> int:
    args = parse_args(argv)
    from decflow.environment import quiet_defaults

    quiet_defaults()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    res = Results(f"{machine['cpu']} ({machine['cores']} cores, {machine['ram_gib']} GiB)")
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    print(f"scale benchmark: {', '.join(args.parts)}{' (quick)' if args.quick else ''}; "
          f"work dir {args.workdir}", flush=True)
    t0 = time.perf_counter()
    steps = [("kmeans", bench_kmeans), ("forward", bench_forward), ("writer", bench_writer),
             ("nightly", bench_nightly)]
    for name, bench in steps:
        if name in args.parts:
            _guarded(name, bench, args, res)
    if "score" in args.parts or "recluster" in args.parts:
        _guarded("score/recluster", bench_pipeline, args, res, args.parts)
    settings = {k: v for k, v in vars(args).items()}
    out = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": command, "machine": machine, "settings": settings,
           "seconds": time.perf_counter() - t0, "rows": res.rows, "details": res.details,
           "errors": res.errors}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_other_parts(path.with_suffix(".json"), out, args.parts)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str))
    md = to_markdown(out)
    path.with_suffix(".md").write_text(md)
    print(md)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
