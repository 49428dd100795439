"""Partition-wise work over Dask: validate every row and score + write labels in bounded memory.

Each partition of the source is cut into row-group chunks (``sources.WindowScan.chunks``). One
task per chunk reads the chunk's wanted columns in batches on a worker, runs the expectation
suite on each batch (``validation.validate_batch``) and, when scoring, encodes, embeds and
scores the batch with the model and builds its labels rows' own columns (id, cluster id,
confidence, distance: ``score_rows``). The client keeps only small things: the batch results,
added up into one ``ValidationResult``, and the labels tables, completed with the columns
every row shares (``model_columns``) and streamed one chunk at a time into the partition's
file (``partitioned.PartitionWriter``), which replaces the old partition only when the whole
partition passed validation. One chunk per worker thread runs at a time (at most 4 per
thread are waiting to be taken in), so neither the workers nor the client hold a partition.

Id uniqueness stays exact across a whole window: each chunk task also splits its ids by hash
into buckets; one task per bucket then finds the duplicates among the ids of every chunk.

The model travels once per worker (``engine.payload``): its files go to the cluster as bytes,
each worker fetches them once, and each worker process rebuilds it once, on its own device
(CUDA when present and ``device`` allows).
"""

# About 575 lines, one concern: the chunk tasks (with the timing of their steps) and the
# client loop that feeds, gathers and writes them; the loop's bookkeeping does not split apart
# usefully.

import datetime as dt
import logging
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import distributed
import numpy as np
import pandas as pd
import pyarrow as pa

from decflow.config import FeaturesConfig, PipelineConfig, SourceConfig, ValidationConfig
from decflow.data import label_store, partitioned, sources
from decflow.data.arrow_lists import plain_lists
from decflow.data import validation
from decflow.data.sources import Chunk, WindowScan
from decflow import progress
from decflow.engine.compute import keep_large_allocations, one_blas_thread
from decflow.engine.payload import ModelPayload, PayloadRef, payload_ref, worker_model
from decflow.errors import DataError

_log = logging.getLogger(__name__)

_BUCKET_ROWS = 2_000_000  # ids per uniqueness bucket (about 16-50 MB in one task)


@dataclass(frozen=True)
class LabelsSpec:
    """What each labels row carries besides its scores (DESIGN.md §4)."""

    model_name: str
    model_version: str
    run_id: str
    labeled_at: dt.datetime
    device: str = "auto"


@dataclass(frozen=True)
class Plan:
    """Everything a chunk task needs besides its chunk and the model (small, picklable)."""

    source: SourceConfig
    features: FeaturesConfig
    validation: ValidationConfig
    columns: list[str]  # columns to read: id, features, label
    batch_rows: int
    n_buckets: int
    labels: LabelsSpec | None = None  # None: validate only


@dataclass
class ChunkResult:
    batches: list[validation.BatchValidation]
    labels: pa.Table | None  # ``score_rows``: the labels rows without the model columns
    buckets: list[np.ndarray] = field(default_factory=list)  # ids by hash bucket
    sample: pd.DataFrame | None = None  # the rows at ``sample_rows``, as read
    steps: dict[str, float] = field(default_factory=dict)  # the task's seconds by step (STEPS)


# A chunk task's steps, timed (wall seconds of the task's thread) and added up per partition:
# where labelling's time goes besides the model's forward pass. "other": the rest of the task
# (the model's lookup on the worker, the sample rows, ids by bucket, joining the tables).
STEPS = ("read", "validate", "features", "model", "labels rows", "other")


def partition_name(date_column: str, day: str) -> str:
    return f"{date_column}={day}"


@one_blas_thread
def process_chunk(chunk: Chunk, plan: Plan,
                  payload: "ModelPayload | PayloadRef | None" = None,
                  sample_rows: np.ndarray | None = None) -> ChunkResult:
    """Validate (and score) one chunk batch by batch; runs on a worker. ``sample_rows``
    (sorted positions in the chunk's file): those rows are also returned, as read."""
    start = time.perf_counter()
    src = plan.source
    name = partition_name(src.date_column, chunk.day)
    batches, tables, ids, sampled = [], [], [], []
    if payload is not None:
        keep_large_allocations()
    model = worker_model(payload, plan.labels.device) if payload is not None else None
    steps = dict.fromkeys(STEPS, 0.0)
    frames = sources.read_chunk(chunk, src.date_column, plan.columns, plan.batch_rows,
                                arrow_lists=True)
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        steps["read"] += time.perf_counter() - t0
        if frame is None:
            break
        if sample_rows is not None and len(frame):
            lo, hi = np.searchsorted(sample_rows, [frame.index[0], frame.index[-1] + 1])
            if hi > lo:  # as ``sources.training_sample`` reads them
                sampled.append(plain_lists(frame.loc[sample_rows[lo:hi]]))
        t0 = time.perf_counter()
        batches.append(validation.validate_batch(frame, src, plan.features, plan.validation,
                                                 partition=name, first_row=int(frame.index[0])
                                                 if len(frame) else 0))
        steps["validate"] += time.perf_counter() - t0
        if src.id_column in frame.columns:
            ids.append(frame[src.id_column].to_numpy())
        if model is not None and batches[-1].ok:
            tables.append(score_rows(frame, model, plan, name, steps=steps))
    labels = None
    if model is not None and all(b.ok for b in batches):
        labels = pa.concat_tables(tables) if tables else None
    result = ChunkResult(batches, labels, _bucket_ids(ids, plan.n_buckets),
                         pd.concat(sampled) if sampled else None)
    steps["other"] = max(0.0, time.perf_counter() - start - sum(steps.values()))
    result.steps = {k: v for k, v in steps.items() if v}
    return result


def score_table(frame: pd.DataFrame, model, plan: Plan, partition: str = "", *,
                steps: dict[str, float] | None = None) -> pa.Table:
    """Labels rows (DESIGN.md §4) of a validated frame: ``score_rows`` with the columns every
    row shares (``model_columns``).

    Raises:
        DataError: see ``score_rows``.
    """
    return model_columns(score_rows(frame, model, plan, partition, steps=steps), plan.labels)


def score_rows(frame: pd.DataFrame, model, plan: Plan, partition: str = "", *,
               steps: dict[str, float] | None = None) -> pa.Table:
    """The labels rows' own columns (``label_store.scores_table``: id, cluster id, confidence,
    distance) of a validated frame: what a chunk task sends to the flow's process, which adds
    the rest with ``model_columns`` before writing.

    ``steps``: seconds spent here are added to its "features", "model" and "labels rows".

    Raises:
        DataError: rows whose features are finite but too large for the model (they overflow
            the encoding or the embedding, and would be labelled with a NaN confidence). The
            message names the partition and a few ids; nothing is written.
    """
    from decflow.model.scoring import score_frame

    encoder, estimator = model
    id_column = plan.source.id_column
    advice = ("their feature values are too large for the model; bound the columns "
              "(features.bounds) or fix the rows")
    scores = score_frame(encoder, estimator, frame, steps=steps)
    t0 = time.perf_counter()
    bad = ~(np.isfinite(scores["confidence"].to_numpy())
            & np.isfinite(scores["distance"].to_numpy()))
    if bad.any():
        ids = frame.loc[bad, id_column].head(5).tolist()
        raise DataError(f"{partition}: {int(bad.sum())} row(s) score to a non-finite "
                        f"confidence or distance (ids {ids}): {advice}")
    table = label_store.scores_table(frame[id_column], scores["cluster_id"],
                                     scores["confidence"], scores["distance"],
                                     id_column=id_column)
    if steps is not None:  # after score_frame: checking the scores, building the table
        steps["labels rows"] = steps.get("labels rows", 0.0) + time.perf_counter() - t0
    return table


def model_columns(rows: pa.Table, spec: LabelsSpec) -> pa.Table:
    """``rows`` from ``score_rows`` as whole labels rows: the model's name and version, its
    run and the labelling time, the same on every row."""
    return label_store.with_model_columns(rows, model_name=spec.model_name,
                                          model_version=spec.model_version, run_id=spec.run_id,
                                          labeled_at=spec.labeled_at)


def _bucket_ids(ids: list[np.ndarray], n_buckets: int) -> list[np.ndarray]:
    if not ids:
        return []
    values = np.concatenate(ids)
    if n_buckets == 1:
        return [values]
    if values.dtype.kind in "iu":
        h = (values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    else:
        h = np.fromiter((zlib.crc32(repr(v).encode()) for v in values), np.uint64, len(values))
    which = (h % np.uint64(n_buckets)).astype(np.int64)
    return [values[which == b] for b in range(n_buckets)]


def _pick(result: ChunkResult, what: str):
    return getattr(result, what)


def _pick_checks(result: ChunkResult) -> tuple[list, dict[str, float]]:
    return result.batches, result.steps


def _pick_bucket(result: ChunkResult, b: int) -> np.ndarray | None:
    return result.buckets[b] if result.buckets else None


def _bucket_duplicates(codes: list[int], names: list[str], sample_size: int,
                       per_partition: bool, *parts: np.ndarray | None) -> validation.Duplicates:
    pieces = [(p, np.full(len(p), c)) for p, c in zip(parts, codes) if p is not None]
    return validation.find_duplicates(pieces, sample_size, names, per_partition)


@dataclass
class PartitionOutcome:
    """What ``run_partitions`` did to one scan (a partition, or a whole window)."""

    day: str
    validation_result: validation.ValidationResult | None = None  # None when ``error`` is set
    rows_written: int = 0
    path: str | None = None
    error: BaseException | None = None  # a chunk task failed (unreadable file, ...)
    sample: pd.DataFrame | None = None  # the rows at the scan's sample positions, in order
    steps: dict[str, float] = field(default_factory=dict)  # its chunk tasks' seconds by step


@dataclass
class _Pending:
    """A scan's state while its chunks run."""

    scan: WindowScan
    remaining: int
    batches: list = field(default_factory=list)
    buckets: list = field(default_factory=list)  # per bucket: futures of each chunk's ids
    codes: list = field(default_factory=list)  # partition index of each chunk
    writer: partitioned.PartitionWriter | None = None
    error: BaseException | None = None
    n_chunks: int = 0
    submitted: int = 0
    duplicates: list = field(default_factory=list)  # futures of Duplicates, one per bucket
    sampled: list = field(default_factory=list)  # the chunks' sampled rows, in chunk order
    steps: Counter = field(default_factory=Counter)  # the chunk tasks' seconds by step


def run_partitions(client: distributed.Client, scans: list[WindowScan], plans: list[Plan], *,
                   payload: distributed.Future | None = None, labels_uri: str | None = None,
                   chunk_rows: int = 100_000, in_flight: int | None = None,
                   samples: list[dict[str, np.ndarray] | None] | None = None
                   ) -> Iterator[PartitionOutcome]:
    """Validate every row of each scan and, with a model, label it; one outcome per scan.

    Chunks of all scans form one queue with at most ``in_flight`` (default: one per worker
    thread) running, refilled as each finishes, so small partitions keep every worker busy
    too. No chunk waits on a worker behind another: the small tasks that hand a finished
    chunk's results to the client would queue behind it on a one-thread worker, and the client
    would see each chunk a whole chunk late (measured: 3 s of 20 idle on one of 2 workers).
    With ``payload`` (the
    ``ModelPayload`` future from ``scatter_model``) and ``labels_uri`` each scan must be one
    partition: its labels file is written chunk by chunk as results arrive and put in place
    only when every expectation passed on every row and no task failed; otherwise the old
    labels stay.

    Yields:
        ``PartitionOutcome`` per scan, in order, as soon as its last chunk is in.

    ``samples`` (per scan, ``sources.sample_positions``): the chunk tasks also return the rows
    at those positions, as read; the outcome's ``sample`` holds them in window order, the rows
    ``sources.sample_window`` would read again.
    """
    scoring = payload is not None
    if scoring and any(len(s.lineage.partitions) != 1 for s in scans):
        raise ValueError("labels are written per partition; got scans over "
                         f"{[s.lineage.partitions for s in scans]}")
    if not scoring:
        yield from _run_partitions(client, scans, plans, (), labels_uri, chunk_rows, in_flight,
                                   samples)
        return
    with payload_ref(client, payload) as ref:
        yield from _run_partitions(client, scans, plans, (ref,), labels_uri, chunk_rows,
                                   in_flight, samples)


def _run_partitions(client: distributed.Client, scans: list[WindowScan], plans: list[Plan],
                    args: tuple, labels_uri: str | None, chunk_rows: int, in_flight: int | None,
                    samples: list[dict[str, np.ndarray] | None] | None
                    ) -> Iterator[PartitionOutcome]:
    scoring = bool(args)
    threads = sum(client.nthreads().values())
    limit = in_flight or max(1, threads)
    window = 4 * limit  # chunks submitted and not yet taken in: bounds what waits on workers
    chunk_rows = balanced_chunk_rows(chunk_rows, sum(s.n_rows for s in scans), threads)
    # The suite's specs for merging each scan's batches, built on a worker before the first
    # chunk: this process then never imports Great Expectations (about 2 s, on the critical
    # path once the last chunk is in).
    specs = {}
    for p in plans:
        if _suite_key(p) not in specs:
            specs[_suite_key(p)] = client.submit(validation.suite_specs, p.source, p.features,
                                                 p.validation, pure=False, priority=10)
    states = [_Pending(s, 0, buckets=[[] for _ in range(p.n_buckets)])
              for s, p in zip(scans, plans)]
    jobs = []
    for i, scan in enumerate(scans):
        try:  # files that disagree on a column fail their scan, before any read
            scan.check_columns(plans[i].columns)
        except DataError as exc:
            states[i].error = exc
            jobs.append((i, None))
            continue
        chunks = scan.chunks(chunk_rows)
        states[i].remaining = states[i].n_chunks = len(chunks)
        jobs += [(i, c) for c in chunks] or [(i, None)]

    def submit(i: int, c: Chunk | None):
        st, plan = states[i], plans[i]
        if c is None:
            return i, None, None, None, 0, None
        wanted = (samples[i] or {}).get(c.path) if samples else None
        if wanted is not None:
            lo, hi = np.searchsorted(wanted, [c.first_row, c.first_row + c.n_rows])
            wanted = wanted[lo:hi] if hi > lo else None
        slots = client.nthreads()
        load = Counter(w for w, _ in live.values())
        worker = min(slots, key=lambda w: (load[w] / max(1, slots[w]), w))
        fut = client.submit(process_chunk, c, plan, *args, sample_rows=wanted, pure=False,
                            workers=[worker], allow_other_workers=True)
        parts = [client.submit(_pick_bucket, fut, b, pure=False, **near)
                 for b in range(plan.n_buckets)]
        for b, part in enumerate(parts):
            st.buckets[b].append(part)
        st.codes.append(st.scan.lineage.partitions.index(c.day))
        st.submitted += 1
        if st.submitted == st.n_chunks:  # the last chunk: look for duplicates meanwhile
            names = [partition_name(st.scan.date_column, d) for d in st.scan.lineage.partitions]
            st.duplicates = [client.submit(_bucket_duplicates, st.codes, names,
                                           plan.validation.sample_size,
                                           plan.validation.unique_ids == "partition", *futs,
                                           pure=False)
                             for futs in st.buckets]
        picks = (client.submit(_pick_checks, fut, pure=False, **near),
                 client.submit(_pick, fut, "labels", pure=False, **near) if scoring else None,
                 client.submit(_pick, fut, "sample", pure=False, **near)
                 if wanted is not None else None)
        parts += [f for f in picks if f is not None]
        live[fut.key] = [worker, len(parts)]
        for f in parts:
            of[f.key] = fut.key
            ac.add(f)
        return (i, *picks, c.n_rows, fut.key)

    # Chunks are taken in (and written) in order; another is submitted as soon as one is done:
    # its task and the small tasks that take its results apart (which run on its worker at
    # once, as nothing else waits there; submitted before they ran, the next chunk would go
    # to a busy worker, whose task slots look freer than those of the one running them).
    ac = distributed.as_completed()
    pending, todo = deque(), iter(jobs)
    # Result tasks run where their chunk's result is. Unrestricted, Dask takes a group of many
    # small tasks with few dependencies for "root-ish" and queues them on the scheduler until
    # some worker has a free slot, which need not be the one holding the data (measured: a
    # chunk's results reached this process 3 s late). Any worker may still run them.
    near = {"workers": list(client.nthreads()), "allow_other_workers": True}
    # Each chunk goes to the worker with the fewest of this run's chunks per thread (the one a
    # chunk just left). Left to Dask, a small group of tasks without dependencies went by
    # estimated occupancy: the first two chunks on one of two workers, or 3 of 10 chunks behind
    # a busy worker while the other stood idle (3 s each). Any worker may still run them (a
    # worker that restarted has a new address).
    live: dict = {}  # chunk task key -> [its worker, its result tasks not yet done]
    of: dict = {}  # result task key -> chunk task key

    def refill(block: bool) -> None:
        if block or ac.has_ready():
            for f in ac.next_batch(block=True):
                chunk = of.pop(f.key)
                live[chunk][1] -= 1
                if not live[chunk][1]:
                    del live[chunk]
        while len(live) < limit and len(pending) < window:
            job = next(todo, None)
            if job is None:
                return
            pending.append(submit(*job))

    what = "labels" if scoring else "validate"
    shown = progress.begin(what, sum(s.n_rows for s in scans), "rows")
    refill(False)
    while pending:
        while pending[0][5] in live:
            refill(True)
        i, fb, fl, fs, rows, _ = pending.popleft()
        refill(False)
        st = states[i]
        if fb is not None:
            st.remaining -= 1
            if st.error is None:
                try:
                    batches, steps = fb.result()
                    st.batches.extend(batches)
                    st.steps.update(steps)
                    if fs is not None:
                        st.sampled.append(fs.result())
                    table = fl.result() if fl is not None else None
                    if table is not None and all(b.ok for b in st.batches):
                        if st.writer is None:
                            st.writer = partitioned.PartitionWriter(
                                labels_uri, st.scan.date_column, st.scan.lineage.partitions[0],
                                metadata={label_store.SOURCE_DIGEST_KEY: st.scan.lineage.digest,
                                          label_store.SOURCE_ROWS_KEY: st.scan.n_rows},
                                dictionary=label_store.DICTIONARY_COLUMNS)
                            st.writer.__enter__()
                        st.writer.write(model_columns(table, plans[i].labels))
                except Exception as exc:  # the task's or the writer's; reported per scan
                    st.error = exc
        shown.advance(rows)
        if st.remaining <= 0:
            yield _finish(client, st, plans[i], specs[_suite_key(plans[i])])
    shown.end()


def _suite_key(plan: Plan) -> tuple[str, str, str]:
    return (plan.source.model_dump_json(), plan.features.model_dump_json(),
            plan.validation.model_dump_json())


def _finish(client: distributed.Client, st: _Pending, plan: Plan,
            specs: distributed.Future) -> PartitionOutcome:
    day = st.scan.lineage.partitions[0] if st.scan.lineage.partitions else ""
    out = PartitionOutcome(day)
    try:
        if st.error is None:
            out.validation_result = _validation_result(client, st, plan, specs.result())
    except Exception as exc:
        st.error = exc
    out.error = st.error
    out.steps = dict(st.steps)
    if out.error is None and st.sampled:
        out.sample = pd.concat(st.sampled, ignore_index=True)
    st.sampled = []
    writer, st.writer = st.writer, None
    if writer is not None:
        if out.error is None and out.validation_result.success:
            writer.__exit__(None, None, None)
            out.rows_written, out.path = writer.rows, writer.path
        else:
            writer.__exit__(_Invalid, _Invalid(), None)  # drops the temporary file
    where, n = _describe(st.scan), st.scan.n_rows
    if out.error is not None:
        _log.warning("%s: %d rows, failed: %s", where, n,
                     f"{type(out.error).__name__}: {out.error}"[:500])
    elif not out.validation_result.success:
        _log.warning("%s: %d rows failed validation%s", where, n,
                     "; no labels written" if plan.labels is not None else "")
    else:
        _log.info("%s: %d rows validated%s%s", where, n,
                  f", {out.rows_written} labels written to {out.path}" if out.path else "",
                  f"; {describe_steps(out.steps)}" if out.steps else "")
    return out


def describe_steps(steps: dict[str, float]) -> str:
    """``tasks 22.12 s: model 17.71 s (80%), validate 1.83 s (8%), ...``: where the chunk
    tasks' time went (wall seconds of their threads, summed over the workers), largest first."""
    total = sum(steps.values()) or 1.0
    shares = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})"
                       for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
    return f"tasks {sum(steps.values()):.2f} s: {shares}"


def _describe(scan: WindowScan) -> str:
    """``ds=2026-11-21`` or ``ds=2026-11-19..2026-11-21 (3 partitions)`` for log lines."""
    parts = scan.lineage.partitions
    if not parts:
        return f"{scan.date_column}=(none)"
    if len(parts) == 1:
        return f"{scan.date_column}={parts[0]}"
    return f"{scan.date_column}={parts[0]}..{parts[-1]} ({len(parts)} partitions)"


def _validation_result(client: distributed.Client, st: _Pending, plan: Plan,
                       specs: list[dict]) -> validation.ValidationResult:
    dups = None
    if any(plan.source.id_column in b.columns for b in st.batches):
        dups = validation.merge_duplicates(client.gather(st.duplicates),
                                           plan.validation.sample_size)
    return validation.merge_batches(st.batches, dups, plan.source, plan.features,
                                    plan.validation, specs)


class _Invalid(Exception):
    """Aborts a labels write (the temporary file is dropped)."""


def run_partition(client: distributed.Client, scan: WindowScan, plan: Plan, **kwargs
                  ) -> PartitionOutcome:
    """``run_partitions`` for one scan; a failed chunk task raises here."""
    out = next(run_partitions(client, [scan], [plan], **kwargs))
    if out.error is not None:
        raise out.error
    return out


_MIN_CHUNK_ROWS = 25_000  # below this a task's fixed costs (reading a footer, the suite) show


def balanced_chunk_rows(chunk_rows: int, total_rows: int, threads: int) -> int:
    """Rows per chunk task: ``chunk_rows``, or smaller where that leaves fewer than 4 chunks
    per worker thread, so the last round of tasks does not leave threads idle (5 chunks of
    200,000 rows on 2 threads: 3 rounds, the last on one thread; measured on 2 workers,
    1M rows: 23.5 s warm, one worker idle a quarter of it). Never below 25,000 rows."""
    balanced = -(-total_rows // (4 * max(1, threads)))
    return max(1, min(chunk_rows, max(_MIN_CHUNK_ROWS, balanced)))


def bucket_count(n_rows: int) -> int:
    return max(1, -(-n_rows // _BUCKET_ROWS))


def make_plan(config: PipelineConfig, n_rows: int, labels: LabelsSpec | None = None) -> Plan:
    """The chunk tasks' plan for a scan of ``n_rows`` rows under ``config``."""
    return Plan(config.source, config.features, config.validation,
                config.source_columns(), config.batch_rows(),
                bucket_count(n_rows), labels)


def validate_scan(client: distributed.Client, scan: WindowScan, config: PipelineConfig
                  ) -> validation.ValidationResult:
    """Every expectation on every row of ``scan`` (a window), chunk-wise on the cluster."""
    return run_partition(client, scan, make_plan(config, scan.n_rows),
                         chunk_rows=config.compute.chunk_rows).validation_result


def validate_and_sample(client: distributed.Client, scan: WindowScan, config: PipelineConfig
                        ) -> tuple[validation.ValidationResult, pd.DataFrame]:
    """``validate_scan``, and the training sample (``sources.training_sample``: the same rows,
    columns and order) taken by the chunk tasks from the rows they read to validate: the
    window is read once, not once more for the sample."""
    t = config.train
    positions = sources.sample_positions(scan, t.max_train_rows, t.random_state)
    out = run_partition(client, scan, make_plan(config, scan.n_rows),
                        chunk_rows=config.compute.chunk_rows, samples=[positions])
    sample = out.sample
    if sample is None:  # no rows to sample: the empty frame with the run's columns
        sample = sources.training_sample(scan, config)
    return out.validation_result, sample


def label_partition(client: distributed.Client, scan: WindowScan, config: PipelineConfig,
                    payload: distributed.Future, spec: LabelsSpec) -> PartitionOutcome:
    """Validate and label one partition on the cluster (see ``run_partitions``)."""
    return run_partition(client, scan, make_plan(config, scan.n_rows, spec), payload=payload,
                         labels_uri=config.labels_uri(), chunk_rows=config.compute.chunk_rows)


def label_partitions(client: distributed.Client, scans: list[WindowScan],
                     config: PipelineConfig, payload: distributed.Future, spec: LabelsSpec
                     ) -> Iterator[PartitionOutcome]:
    """Validate and label several partitions, their chunks sharing the cluster."""
    return run_partitions(client, scans, [make_plan(config, s.n_rows, spec) for s in scans],
                          payload=payload, labels_uri=config.labels_uri(),
                          chunk_rows=config.compute.chunk_rows)
