"""Property: a valid partition corrupted at random either passes validation and gets exactly one
labels row per source id, with a cluster in [0, k) and finite scores, or fails with a
``DataError`` (``DataValidationError`` is one) that says why, leaving every labels file as it
was. Any other exception is a failure of the property.

Library level: ``sources.scan_window`` + ``scoring.label_partition`` + ``validation.check``, the
calls the ``score`` flow makes, on one in-process Dask cluster and one small model fitted per
module. Each example copies a good two-file partition and a labels dataset, corrupts the copy
with one to three corruptions (harmless ones included) and labels it.
"""

import datetime as dt
import hashlib
import math
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from decflow import DeepEmbeddedClustering
from decflow.config import PipelineConfig
from decflow.data import partitioned, sources
from decflow.data import validation
from decflow.engine import partitions as scoring
from decflow.engine.compute import dask_client
from decflow.engine.payload import scatter_model
from decflow.errors import DataError
from decflow.model.features import FeatureEncoder

pytestmark = pytest.mark.slow  # a Dask cluster (the `world` fixture)

DAY = dt.date(2026, 11, 21)
OTHER = DAY - dt.timedelta(days=1)  # a labels partition no run here may touch
ROWS, GROUP, FILES = 60, 20, ("part-0.parquet", "part-1.parquet")
N_CLUSTERS = 4
SPEC = scoring.LabelsSpec("m", "1", "run", dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc),
                          "cpu")


def _rows(n: int, start_id: int, seed: int) -> pa.Table:
    """Four blobs: an 8-d vector, a bounded numeric and a categorical column, the truth."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(42).normal(scale=5.0, size=(4, 8))
    y = rng.integers(0, 4, n)
    vec = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return pa.table({
        "id": pa.array(np.arange(start_id, start_id + n, dtype=np.int64)),
        "emb": pa.array([list(map(float, v)) for v in vec], pa.list_(pa.float32())),
        "x": pa.array((y * 3.0 + rng.normal(size=n)).astype(np.float64)),
        "c": pa.array(["abcd"[k] for k in y]),
        "truth": pa.array(y.astype(np.int64)),
    })


def _config(home: Path, source: Path, labels: Path) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "home": str(home),
        "source": {"uri": str(source), "id_column": "id", "label_column": "truth",
                   "window_days": 1},
        "labels": {"uri": str(labels)},
        "features": {"vector": {"emb": 8}, "numeric": ["x"], "categorical": ["c"],
                     "bounds": {"x": [-100, 100]}},
        "validation": {"min_rows": 20},
        "model": {"n_clusters": N_CLUSTERS},
        # two chunks per file (chunk_rows), one batch per chunk: several labels tables per
        # partition reach the writer, so a failure after the first one is exercised
        "compute": {"n_workers": 1, "threads_per_worker": 2, "processes": False,
                    "chunk_rows": 2 * GROUP, "batch_rows": 1000},
    })


def _label(client, payload, config: PipelineConfig) -> scoring.PartitionOutcome:
    """What the ``score`` flow does to one night: scan, validate + label, fail on errors."""
    scan = sources.scan_window(config.source, DAY, 1)
    outcome = scoring.label_partition(client, scan, config, payload, SPEC)
    validation.check(outcome.validation_result)
    return outcome


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (hidden ones too): sha256 of each file's bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = "dir"
        for n in names:
            out[os.path.join(rel, n)] = hashlib.sha256(
                Path(dirpath, n).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A good source partition, its labels (plus another day's), a cluster and the model."""
    base = tmp_path_factory.mktemp("property")
    source, labels = base / "source", base / "labels"
    part = source / f"ds={DAY}"
    part.mkdir(parents=True)
    for i, name in enumerate(FILES):
        pq.write_table(_rows(ROWS, i * ROWS, seed=i), part / name, row_group_size=GROUP)
    config = _config(base / "home", source, labels)
    scan = sources.scan_window(config.source, DAY, 1)
    train = sources.sample_window(scan, 10 * ROWS,
                                  config.source_columns())
    encoder = FeatureEncoder(config.features)
    # any fitted model will do: k-means init is seconds where manifold init takes ~30 s
    estimator = DeepEmbeddedClustering(
        N_CLUSTERS, n_components=4, hidden=(32, 32), pretrain_epochs=10, max_iter=20,
        n_init=2, batch_size=64, init="k-means", device="cpu", random_state=0,
    ).fit(encoder.fit_transform(train))
    with dask_client(config.compute) as client:
        payload = scatter_model(client, (encoder, estimator))
        first = _label(client, payload, config)
        assert first.rows_written == len(FILES) * ROWS
        shutil.copytree(labels / f"ds={DAY}", labels / f"ds={OTHER}")
        yield base, source, labels, client, payload, (encoder, estimator)


# --- corruptions ----------------------------------------------------------------------------
# Each is a tuple (kind, *args) so a failing example prints as data; ``_apply`` dispatches on the
# kind. A corruption that no longer applies (its file or column already gone) does nothing.

def _read(path: Path) -> pa.Table | None:
    if not path.exists():
        return None
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError):  # garbage or truncated by an earlier corruption
        return None


def _write(path: Path, table: pa.Table, group: int = GROUP) -> None:
    pq.write_table(table, path, row_group_size=group)


def _set_column(table: pa.Table, name: str, values: list, type_: pa.DataType) -> pa.Table:
    """``name`` holding ``values``, in ``type_`` when they fit it, else as Arrow infers; the
    table as it was when neither can hold them (a string column given a float)."""
    for t in (type_, None):
        try:
            array = pa.array(values, t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            continue
        return table.set_column(table.schema.get_field_index(name), name, array)
    return table


VECTOR_EDITS = {
    "null": lambda v: None,
    "nan": lambda v: [math.nan, *v[1:]],
    "inf": lambda v: [*v[:-1], -math.inf],
    "short": lambda v: v[:5],
    "long": lambda v: [*v, 0.0],
    "empty": lambda v: [],
    "huge": lambda v: [1e25, *v[1:]],  # finite, even in float32
    "tiny": lambda v: [1e-38, *v[1:]],
}
ID_EDITS = {"null": None, "duplicate": "dup", "huge": 2**62, "negative": -7}


def _cell(path: Path, column: str, row: int, edit) -> None:
    table = _read(path)
    if table is None or column not in table.column_names or table.num_rows == 0:
        return
    values = table[column].to_pylist()
    row %= len(values)
    if column == "emb":
        v = values[row]
        values[row] = VECTOR_EDITS[edit](v) if isinstance(v, list) else None
    elif column == "id":
        values[row] = values[(row + 1) % len(values)] if edit == "dup" else edit
    else:
        values[row] = edit
    _write(path, _set_column(table, column, values, table.schema.field(column).type))


def _retype(table: pa.Table, column: str, target: str) -> pa.Table:
    col = table[column]
    values = col.to_pylist()
    if target == "string":
        new = pa.array([None if v is None else str(v) for v in values], pa.string())
    elif target == "float32":
        new = pa.compute.cast(col, pa.float32(), safe=False)
    elif target == "rounded-int64":
        new = pa.array([None if v is None or not math.isfinite(v) else int(round(v))
                        for v in values], pa.int64())
    elif target == "int32":
        new = pa.compute.cast(col, pa.int32(), safe=False)
    elif target == "half-float":  # ids 0.5 apart: numbers still, but not integers
        new = pa.array([None if v is None else v + 0.5 for v in values], pa.float64())
    elif target == "bool":
        new = pa.array([bool(v) if v is not None else None for v in values], pa.bool_())
    elif target == "dictionary":
        new = pa.compute.dictionary_encode(col)
    elif target == "large_string":
        new = pa.compute.cast(col, pa.large_string())
    elif target == "binary":  # non-UTF-8 bytes, stored as binary
        new = pa.array([None if v is None else b"\xff\xfe" + str(v).encode() for v in values],
                       pa.binary())
    elif target == "codes":  # categories as integers
        new = pa.array([None if v is None else sum(map(ord, str(v))) for v in values],
                       pa.int64())
    elif target == "large_list_double":
        new = pa.compute.cast(col, pa.large_list(pa.float64()))
    elif target == "fixed_size_list":
        new = pa.compute.cast(col, pa.list_(pa.float32(), 8))
    elif target == "nested":  # each element its own list
        new = pa.array([None if v is None else [[e] for e in v] for v in values],
                       pa.list_(pa.list_(pa.float32())))
    else:
        raise AssertionError(target)
    return table.set_column(table.schema.get_field_index(column), column, new)


RETYPES = {
    "id": ["string", "int32", "half-float"],
    "x": ["string", "float32", "rounded-int64", "bool"],
    "c": ["dictionary", "large_string", "binary", "codes"],
    "emb": ["large_list_double", "fixed_size_list", "nested", "string"],
    "truth": ["string", "int32"],
}
COLUMNS = list(RETYPES)


def _invalid_utf8(table: pa.Table, column: str, rows: list[int]) -> pa.Table:
    """``column`` as a string column (no UTF-8 check on write) holding invalid bytes."""
    n = table.num_rows
    if column in table.column_names:
        raw = [None if v is None else str(v).encode() for v in table[column].to_pylist()]
    else:
        raw = [b"note"] * n
    for r in rows:
        raw[r % n] = b"\xff\xfe\xfd"
    array = pa.array(raw, pa.binary()).view(pa.string())
    if column in table.column_names:
        return table.set_column(table.schema.get_field_index(column), column, array)
    return table.append_column(column, array)


def _flip_page_header(path: Path) -> None:
    """Scramble bytes right after the magic: the first page header, footer intact."""
    data = bytearray(path.read_bytes())
    for i in range(4, min(44, len(data) - 8)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _apply(part: Path, corruption: tuple) -> None:
    kind, *args = corruption
    if kind == "add_file":
        how, = args
        target = part / "part-9.parquet"
        good = _read(part / FILES[0])
        if how == "empty_same_schema" and good is not None:
            _write(target, good.schema.empty_table())
        elif how == "empty_without_c" and good is not None and "c" in good.column_names:
            _write(target, good.drop_columns(["c"]).schema.empty_table())
        elif how == "copy" and good is not None:
            _write(target, good)
        elif how == "garbage":
            target.write_bytes(b"not parquet at all")
        elif how == "hidden_junk":
            (part / ".part-9.parquet.tmp").write_bytes(b"half a write")
        elif how == "marker":
            (part / "_SUCCESS").write_bytes(b"")
        elif how == "text_file":
            (part / "README.txt").write_text("not data")
        return
    path = part / FILES[args[0]]
    cells = {"numeric_cell": "x", "id_cell": "id", "vector_cell": "emb", "category_cell": "c"}
    if kind in cells:
        _cell(path, cells[kind], args[1], ID_EDITS[args[2]] if kind == "id_cell" else args[2])
        return
    if kind == "file":
        how = args[1]
        if not path.exists():
            return
        if how == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif how == "garbage":
            path.write_bytes(b"\x00garbage" * 40)
        elif how == "flip_page_header":
            _flip_page_header(path)
        elif how == "delete":
            path.unlink()
        return
    table = _read(path)
    if table is None:
        return
    if kind == "drop_column":
        if args[1] in table.column_names:
            _write(path, table.drop_columns([args[1]]))
    elif kind == "rename_column":
        if args[1] in table.column_names:
            _write(path, table.rename_columns(
                [f"{c}_renamed" if c == args[1] else c for c in table.column_names]))
    elif kind == "retype_column":
        if args[1] in table.column_names:
            _write(path, _retype(table, args[1], args[2]))
    elif kind == "invalid_utf8":
        _write(path, _invalid_utf8(table, args[1], args[2]))
    elif kind == "extra_column":
        n, how = table.num_rows, args[1]
        extra = {"numbers": pa.array(np.arange(n, dtype=np.float64)),
                 "text": pa.array([f"t{i}" for i in range(n)]),
                 "nested": pa.array([[[i]] for i in range(n)]),
                 "nulls": pa.nulls(n)}[how]
        _write(path, table.append_column(f"unknown_{how}", extra))
    elif kind == "rows":
        how, n = args[1], table.num_rows
        if how == "shuffle":
            _write(path, table.take(pa.array(np.random.default_rng(args[2]).permutation(n))))
        elif how == "regroup":
            _write(path, table, group=max(1, args[2] % 13 + 1))
        elif how == "duplicate_row" and n:
            _write(path, pa.concat_tables([table, table.slice(args[2] % n, 1)]))
        elif how == "keep_few":
            _write(path, table.slice(0, args[2] % 8))
        elif how == "zero_rows":
            _write(path, table.schema.empty_table())
    else:
        raise AssertionError(kind)


files = st.integers(0, len(FILES) - 1)
rows = st.integers(0, ROWS - 1)


def _kind(name: str, *args: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.just(name), *args)


KINDS = {
    "numeric_cell": _kind("numeric_cell", files, rows, st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e6, None, -100.0, 100.0,
                         -0.0, 5e-324]),
        st.floats(-100, 100))),
    "id_cell": _kind("id_cell", files, rows, st.sampled_from(list(ID_EDITS))),
    "vector_cell": _kind("vector_cell", files, rows, st.sampled_from(list(VECTOR_EDITS))),
    "category_cell": _kind("category_cell", files, rows,
                           st.sampled_from([None, "", "unseen", "é ü 漢字", "z" * 500])),
    "drop_column": _kind("drop_column", files, st.sampled_from(COLUMNS)),
    "rename_column": _kind("rename_column", files, st.sampled_from(COLUMNS)),
    "retype_column": st.sampled_from(COLUMNS).flatmap(lambda column: _kind(
        "retype_column", files, st.just(column), st.sampled_from(RETYPES[column]))),
    "invalid_utf8": _kind("invalid_utf8", files, st.sampled_from(["c", "note"]),
                          st.lists(rows, min_size=1, max_size=3)),
    "extra_column": _kind("extra_column", files,
                          st.sampled_from(["numbers", "text", "nested", "nulls"])),
    "rows": _kind("rows", files, st.sampled_from(
        ["shuffle", "regroup", "duplicate_row", "keep_few", "zero_rows"]),
        st.integers(0, 2**16)),
    "file": _kind("file", files, st.sampled_from(
        ["truncate", "garbage", "flip_page_header", "delete"])),
    "add_file": _kind("add_file", st.sampled_from(
        ["empty_same_schema", "empty_without_c", "copy", "garbage", "hidden_junk", "marker",
         "text_file"])),
}
corruptions = st.sampled_from(list(KINDS)).flatmap(KINDS.__getitem__)


def _source_ids(part: Path) -> list:
    """Ids of every file a reader sees in the partition (plain readers skip "." and "_")."""
    ids = []
    for p in sorted(part.glob("*.parquet")):
        if not p.name.startswith((".", "_")):
            ids += pq.read_table(p, columns=["id"])["id"].to_pylist()
    return ids


def _labelled_whole_or_not_at_all(world, changes: list[tuple]) -> str:
    """Corrupt a copy of the good partition with ``changes``, label it, check the property.

    Returns "labelled" or the declared error's class name; any other exception propagates.
    The copy is not deleted: after a failed chunk, ``run_partitions`` returns without waiting
    for the partition's other chunk tasks, which may still be reading it.
    """
    base, good, good_labels, client, payload, _ = world
    work = Path(tempfile.mkdtemp(dir=base, prefix="example-"))
    source, labels = work / "source", work / "labels"
    shutil.copytree(good, source)
    shutil.copytree(good_labels, labels)
    part = source / f"ds={DAY}"
    for change in changes:
        _apply(part, change)
    before = _snapshot(labels)
    config = _config(work / "home", source, labels)
    try:
        outcome = _label(client, payload, config)
    except DataError as exc:  # DataValidationError is one
        assert str(exc).strip(), "a DataError must say what is wrong"
        assert _snapshot(labels) == before, f"a failed run changed the labels: {exc}"
        return type(exc).__name__
    ids = _source_ids(part)
    written = pq.read_table(labels / f"ds={DAY}" / partitioned.PART_FILE)
    got = written["id"].to_pylist()
    assert outcome.rows_written == len(got) == len(ids), (outcome.rows_written, len(got),
                                                          len(ids))
    assert len(set(got)) == len(got), "the labels hold an id twice"
    assert Counter(got) == Counter(ids), "the labels ids differ from the source ids"
    cluster = written["cluster_id"].to_numpy()
    assert ((cluster >= 0) & (cluster < N_CLUSTERS)).all(), sorted(set(cluster.tolist()))
    for score in ("confidence", "distance"):
        values = written[score].to_numpy()
        bad = ~np.isfinite(values)
        assert not bad.any(), (f"{bad.sum()} labels rows have a non-finite {score} (ids "
                               f"{np.asarray(got, dtype=object)[bad][:5].tolist()})")
    confidence = written["confidence"].to_numpy()
    assert ((confidence > 0) & (confidence <= 1)).all()
    after = _snapshot(labels)
    # only the night's labels file was replaced: no other partition touched, no temporary left
    changed = {k for k in set(after) | set(before) if after.get(k) != before.get(k)}
    assert changed <= {os.path.join(f"ds={DAY}", partitioned.PART_FILE)}, changed
    return "labelled"


# Each kind leads a few examples of its own (hypothesis draws kinds unevenly: 40 examples over
# one strategy of all kinds missed some), followed by up to two corruptions of any kind.
@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          # a failing example is 1-3 short tuples, readable as drawn; shrinking or explaining
          # it reruns the pipeline hundreds of times (minutes)
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_corrupted_partition_is_labelled_whole_or_not_at_all(world, kind, data):
    changes = [data.draw(KINDS[kind], label="first"),
               *data.draw(st.lists(corruptions, max_size=2), label="then")]
    for change in changes:
        event(change[0])
    event(_labelled_whole_or_not_at_all(world, changes))


# Corruptions that broke the property once (and harmless neighbours), run every time.
KNOWN = {
    "non-utf8-text-in-a-feature": ([("invalid_utf8", 0, "c", [3])], "DataError"),
    "non-utf8-text-in-an-unread-column": ([("invalid_utf8", 1, "note", [0, 59])], "labelled"),
    "corrupt-page-header-footer-intact": ([("file", 0, "flip_page_header")], "DataError"),
    "fractional-ids-in-the-second-file": ([("retype_column", 1, "id", "half-float")],
                                          "DataError"),
    "fractional-ids-in-the-first-file": ([("retype_column", 0, "id", "half-float")],
                                         "labelled"),
    # passes validation (finite), overflowed the embedding: labelled with a NaN confidence
    "huge-finite-vector-element": ([("vector_cell", 0, 3, "huge")], "DataError"),
    "shuffled-regrouped-with-junk": ([("rows", 0, "shuffle", 1), ("rows", 1, "regroup", 3),
                                      ("add_file", "hidden_junk")], "labelled"),
}


@pytest.mark.parametrize("case", list(KNOWN))
def test_known_corruptions(world, case):
    changes, expected = KNOWN[case]
    outcome = _labelled_whole_or_not_at_all(world, changes)
    assert outcome == expected


def test_rows_too_large_for_the_model_are_a_data_error_naming_their_ids(world):
    """Validation passes finite values; scoring must not write a row it cannot score: a value
    beyond float32 once encoded (no bounds on the column) or one that overflows the embedding."""
    *_, (encoder, estimator) = world
    base = world[0]
    config = _config(base / "home", base / "source", base / "labels")
    plan = scoring.make_plan(config, 60, SPEC)
    frame = pq.read_table(base / "source" / f"ds={DAY}" / FILES[0]).to_pandas()
    assert len(scoring.score_table(frame, (encoder, estimator), plan, "ds=x")) == len(frame)
    huge_x = frame.copy()
    huge_x.loc[[3, 7], "x"] = 1e39  # finite as float64, inf as float32
    with pytest.raises(DataError, match=r"ds=x: 2 row\(s\) score to a non-finite confidence "
                                        r"or distance \(ids \[3, 7\]\): .*features.bounds"):
        scoring.score_table(huge_x, (encoder, estimator), plan, "ds=x")
    huge_vector = frame.copy()
    huge_vector.at[5, "emb"] = np.full(8, 1e25, dtype=np.float32)
    with pytest.raises(DataError, match=r"ds=x: 1 row\(s\) score to a non-finite confidence "
                                        r"or distance \(ids \[5\]\)"):
        scoring.score_table(huge_vector, (encoder, estimator), plan, "ds=x")
