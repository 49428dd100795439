"""The bad-input catalogue: each case corrupts a copy of a good source table (or the config)
and runs a command through the CLI against the stores of one trained pipeline. Every case must
exit with the code of its kind (1 data, 2 usage or config), print a message that names the
problem, leave every label file as it was and move no registry version or alias.

The table of cases is mirrored in docs/RELIABILITY.md (a test keeps the two in step)."""

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from decflow.config import dump_config
from flowkit import DAYS, RUN_DATE, store_state
from decflow.flows.cli import app

runner = CliRunner()
NIGHT = f"ds={RUN_DATE}"
ROOT = Path(__file__).resolve().parents[2]


# --- mutations of the source (a directory holding ds=YYYY-MM-DD/part-0.parquet) -------------
def _night(src):
    return Path(src) / NIGHT / "part-0.parquet"


def _edit(path, change):
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _set(column, values_fn):
    def change(table):
        i = table.schema.get_field_index(column)
        return table.set_column(i, column, values_fn(table))
    return change


def _numeric(value, row=3):
    def values(table):
        x = table["x"].to_numpy().copy()
        x[row] = value
        return pa.array(x)
    return values


def _vectors(make):
    def values(table):
        rows = [list(v) for v in table["emb"].to_pylist()]
        return pa.array(make(rows), pa.list_(pa.float32()))
    return values


def _ids(make):
    def values(table):
        return pa.array(make(table["id"].to_numpy().copy()))
    return values


def nan_numeric(src): _edit(_night(src), _set("x", _numeric(np.nan)))
def inf_numeric(src): _edit(_night(src), _set("x", _numeric(np.inf)))
def huge_magnitude(src): _edit(_night(src), _set("x", _numeric(1e300)))
def below_bounds(src): _edit(_night(src), _set("x", _numeric(-1e6)))
def all_null_numeric(src): _edit(_night(src), _set("x", lambda t: pa.nulls(len(t), pa.float64())))
def text_numbers_everywhere(src):
    for d in DAYS:
        _edit(Path(src) / f"ds={d}" / "part-0.parquet",
              _set("x", lambda t: pa.array([str(v) for v in t["x"].to_pylist()])))
def bool_numeric(src): _edit(_night(src), _set("x", lambda t: pa.array([True] * len(t))))
def null_id(src): _edit(_night(src), _set("id", lambda t: pa.array(
    [None] + t["id"].to_pylist()[1:], pa.int64())))
def duplicate_id(src): _edit(_night(src), _set("id", _ids(lambda a: np.r_[a[1], a[1:]])))
def missing_feature_column(src): _edit(_night(src), lambda t: t.drop_columns(["x"]))
def missing_id_column(src): _edit(_night(src), lambda t: t.drop_columns(["id"]))
def wrong_vector_length(src): _edit(_night(src), _set("emb", _vectors(
    lambda rows: [r[:5] for r in rows])))
def ragged_vectors(src): _edit(_night(src), _set("emb", _vectors(
    lambda rows: [r[: 8 - (i % 3)] for i, r in enumerate(rows)])))
def nan_in_vector(src): _edit(_night(src), _set("emb", _vectors(
    lambda rows: [[float("nan")] + r[1:] if i == 7 else r for i, r in enumerate(rows)])))
def null_vector(src): _edit(_night(src), _set("emb", _vectors(
    lambda rows: [None if i == 2 else r for i, r in enumerate(rows)])))
def vector_as_text(src): _edit(_night(src), _set("emb", lambda t: pa.array(
    [str(v) for v in t["emb"].to_pylist()])))
def non_utf8_category(src): _edit(_night(src), _set("c", lambda t: pa.array(
    [b"\xff\xfe" + s.encode() for s in t["c"].to_pylist()], pa.binary())))
def extra_file_missing_column(src):
    pq.write_table(pq.read_table(_night(src)).drop_columns(["c"]).slice(0, 10),
                   Path(src) / NIGHT / "part-1.parquet")
def extra_file_text_numbers(src):
    t = pq.read_table(_night(src)).slice(0, 10)
    t = t.set_column(t.schema.get_field_index("x"), "x",
                     pa.array([str(v) for v in t["x"].to_pylist()]))
    pq.write_table(t, Path(src) / NIGHT / "part-1.parquet")
def garbage_file(src): (Path(src) / NIGHT / "part-1.parquet").write_bytes(b"not parquet")
def truncated_file(src):
    data = _night(src).read_bytes()
    _night(src).write_bytes(data[: len(data) // 2])
def zero_row_night(src):
    schema = pq.read_schema(_night(src))
    pq.write_table(schema.empty_table(), _night(src))
def empty_night_folder(src):
    shutil.rmtree(Path(src) / NIGHT)
    (Path(src) / NIGHT).mkdir()
def missing_night(src): shutil.rmtree(Path(src) / NIGHT)
def missing_source(src): shutil.rmtree(src)
def too_few_rows(src): _edit(_night(src), lambda t: t.slice(0, 5))
def huge_vector_element(src): _edit(_night(src), _set("emb", _vectors(
    lambda rows: [[1e25] + r[1:] if i == 4 else r for i, r in enumerate(rows)])))
def invalid_utf8_text(src):
    """Bytes that are not UTF-8 inside a column typed as text (the file says string)."""
    t = pq.read_table(_night(src))
    c = t["c"].combine_chunks()
    data = bytearray(c.buffers()[2].to_pybytes())
    offsets = np.frombuffer(c.buffers()[1], dtype=np.int32)
    data[offsets[c.offset + 6]] = 0xFF  # row 6's first byte
    bad = pa.Array.from_buffers(pa.string(), len(c), [c.buffers()[0], c.buffers()[1],
                                                      pa.py_buffer(bytes(data))])
    pq.write_table(t.set_column(t.schema.get_field_index("c"), "c", bad), _night(src))
def corrupt_page(src):
    """A data page's header overwritten; the footer (schema, row counts) still reads."""
    data = bytearray(_night(src).read_bytes())
    data[4:40] = b"\xff" * 36  # the first page header follows the 4-byte magic
    _night(src).write_bytes(bytes(data))
def one_day_window(src):
    for d in DAYS[:-1]:
        shutil.rmtree(Path(src) / f"ds={d}")


# Each case: (mutate source, config changes, command, exit code, message pattern)
SCORE = ["score", "--run-date", str(RUN_DATE), "--model", "champion"]
VALIDATE_WINDOW = ["validate", "--run-date", str(RUN_DATE), "--window"]
CASES = {
    "nan-numeric": (nan_numeric, {}, SCORE, 1, r"not_be_null on column 'x'"),
    "inf-numeric": (inf_numeric, {}, SCORE, 1, r"column 'x'.*1 of 90 values are infinite"),
    "huge-magnitude": (huge_magnitude, {}, SCORE, 1, r"be_between on column 'x'.*outside \[-100, 100\]"),
    "below-bounds": (below_bounds, {}, SCORE, 1, r"be_between on column 'x'.*outside \[-100, 100\]"),
    "all-null-numeric": (all_null_numeric, {}, SCORE, 1, r"column 'x'"),
    "text-numbers": (text_numbers_everywhere, {}, SCORE, 1, r"column 'x'.*type"),
    "bool-as-numeric": (bool_numeric, {}, SCORE, 1, r"column 'x'"),
    "null-id": (null_id, {}, SCORE, 1, r"not_be_null on column 'id'"),
    "duplicate-id": (duplicate_id, {}, SCORE, 1, r"be_unique on column 'id'"),
    "missing-feature-column": (missing_feature_column, {}, SCORE, 1,
                               r"expect_column_to_exist on column 'x'"),
    "missing-id-column": (missing_id_column, {}, SCORE, 1,
                          r"expect_column_to_exist on column 'id'"),
    "wrong-vector-length": (wrong_vector_length, {}, SCORE, 1, r"column 'emb'.*length 8"),
    "ragged-vectors": (ragged_vectors, {}, SCORE, 1, r"column 'emb'.*length 8"),
    "nan-in-vector": (nan_in_vector, {}, SCORE, 1, r"column 'emb'.*finite"),
    "null-vector": (null_vector, {}, SCORE, 1, r"not_be_null on column 'emb'"),
    "vector-as-text": (vector_as_text, {}, SCORE, 1, r"column 'emb'"),
    "non-utf8-category": (non_utf8_category, {}, SCORE, 1, r"column 'c'"),
    "file-missing-a-column": (extra_file_missing_column, {}, SCORE, 1,
                              r"column 'c' is missing from " + NIGHT + "/part-1.parquet"),
    "file-with-text-numbers": (extra_file_text_numbers, {}, SCORE, 1,
                               r"column 'x' is double in .* but string in " + NIGHT
                               + "/part-1.parquet"),
    "garbage-file": (garbage_file, {}, SCORE, 1,
                     NIGHT + r"/part-1.parquet is not a readable Parquet file"),
    "truncated-file": (truncated_file, {}, SCORE, 1,
                       NIGHT + r"/part-0.parquet is not a readable Parquet file"),
    "zero-row-night": (zero_row_night, {}, SCORE, 1,
                       r"source partition " + NIGHT + r" has no rows \(1 Parquet files, 0 rows\)"),
    "empty-night-folder": (empty_night_folder, {}, SCORE, 1,
                           r"source partition " + NIGHT + r" has no rows \(0 Parquet files, 0 "
                           r"rows\)"),
    "missing-night": (missing_night, {}, SCORE, 1, NIGHT + r" is missing"),
    "missing-source": (missing_source, {}, SCORE, 1, r"source dataset not found"),
    "too-few-rows": (too_few_rows, {}, SCORE, 1, r"found 5 rows, expected at least 20"),
    "duplicate-id-across-days": (
        lambda src: _edit(_night(src), _set("id", _ids(lambda a: np.r_[0, a[1:]]))), {},
        VALIDATE_WINDOW, 1, r"be_unique on column 'id' in partition\(s\) ds=2026-11-19, "
                            + NIGHT),
    "huge-vector-element": (huge_vector_element, {}, SCORE, 1,
                            r"score to a non-finite confidence or distance \(ids \[184\]\)"),
    "non-utf8-text": (invalid_utf8_text, {}, SCORE, 1,
                      NIGHT + r"/part-0.parquet holds malformed values .*in column 'c': "
                              r"Invalid: Invalid UTF8"),
    "corrupt-page": (corrupt_page, {}, SCORE, 1,
                     NIGHT + r"/part-0.parquet is not a readable Parquet file \(corrupt data"),
    "one-day-window": (one_day_window, {"validation": {"min_window_days": 2}},
                       ["run", "--run-date", str(RUN_DATE)], 1,
                       r"the training window 2026-11-19..2026-11-21 holds 1 of its 3 daily "
                       r"partitions .* expected at least 2 \(validation.min_window_days\); "
                       r"missing: 2026-11-19, 2026-11-20"),
    # configuration and usage
    "labels-inside-source": (None, {"labels": "SOURCE/labels"}, SCORE, 2,
                             r"labels.uri .* must not be inside source.uri"),
    "unknown-config-key": (None, {"model": {"n_clusterz": 3}}, SCORE, 2, r"n_clusterz"),
    "zero-max-iter": (None, {"train": {"max_iter": 0}}, SCORE, 2, r"train.max_iter"),
    "min-above-max-bounds": (None, {"features": {"bounds": {"x": [5, -5]}}}, SCORE, 2,
                             r"features.bounds"),
    "unknown-device": (None, {"train": {"device": "quantum"}}, SCORE, 2, r"train.device"),
    "date-column-with-path": (None, {"source": {"date_column": "../ds"}}, SCORE, 2,
                              r"source.date_column"),
    "bad-date": (None, {}, ["score", "--run-date", "21/11/2026"], 2, r"YYYY-MM-DD"),
}


def _config_file(tmp_path, config, source: str, changes: dict) -> Path:
    data = yaml_data(config, source)
    for section, value in changes.items():
        if section == "labels":
            data["labels"] = {"uri": value.replace("SOURCE", source)}
        else:
            data[section] = {**data.get(section, {}), **value}
    import yaml
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def yaml_data(config, source: str) -> dict:
    import yaml
    data = yaml.safe_load(dump_config(config))
    data["source"]["uri"] = source
    data["labels"]["uri"] = config.labels_uri()  # the trained pipeline's labels
    data["home"] = config.home
    return data


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(first_night, tmp_path, case):
    """Against the session's shared first night: one good source, its trained model (champion)
    and the run date's labels."""
    good, config = first_night.source, first_night.config
    mutate, changes, command, code, pattern = CASES[case]
    source = str(tmp_path / "source")
    shutil.copytree(good, source)
    if mutate is not None:
        mutate(source)
    path = _config_file(tmp_path, config, source, changes)
    before = store_state(config)
    out = runner.invoke(app, [command[0], "--config", str(path), *command[1:]])
    assert out.exit_code == code, f"{case}: exit {out.exit_code}\n{out.output}"
    assert re.search(pattern, out.output, re.S), f"{case}: {pattern!r} not in\n{out.output}"
    assert "Traceback" not in out.output
    assert store_state(config) == before, f"{case}: labels or registry changed"


def test_the_reliability_document_lists_every_case():
    doc = (ROOT / "docs" / "RELIABILITY.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, re.M))
    assert set(CASES) <= listed, sorted(set(CASES) - listed)
