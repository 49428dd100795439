"""Data layer: the GX expectation suite on small fixture frames, error messages asserted."""

import contextlib
import dataclasses
import json
import pickle
import re

import numpy as np
import pandas as pd
import pytest

from decflow.config import FeaturesConfig, SourceConfig, ValidationConfig
from decflow.data.validation import (DataValidationError, ValidationResult, build_suite, check,
                                     validate_frame)

SOURCE = SourceConfig(id_column="id")
FEATURES = FeaturesConfig(numeric=["x"], categorical=["c"], vector={"pixels": 4},
                          bounds={"x": (0, 10)})
VALIDATION = ValidationConfig(min_rows=3)


def make_frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.arange(1, n + 1),
        "x": np.linspace(0.0, 10.0, n),
        "c": ["a", "b", "a", "c", "b"][:n] + ["a"] * max(0, n - 5),
        "pixels": [np.arange(4, dtype=np.float64) + i for i in range(n)],
    })


def failure_message(df: pd.DataFrame, validation: ValidationConfig = VALIDATION) -> str:
    report = validate_frame(df, SOURCE, FEATURES, validation)
    with pytest.raises(DataValidationError) as err:
        check(report)
    assert err.value.result is report and not report.success
    return str(err.value)


def test_valid_frame_passes():
    df = make_frame()
    report = check(validate_frame(df, SOURCE, FEATURES, VALIDATION))
    assert report.success and report.n_rows == 5 and report.failures() == []
    assert report.summary() == f"all {len(report.results)} expectations passed on 5 rows"
    checked = {(r.expectation, r.column) for r in report.results}
    assert ("expect_column_values_to_be_unique", "id") in checked
    assert ("expect_column_values_to_be_between", "x") in checked
    assert {r.column for r in report.results} == {None, "id", "x", "c", "pixels"}  # no helpers
    assert list(df.columns) == ["id", "x", "c", "pixels"]  # input left alone


def test_accepts_pandas_dtypes_and_any_index():
    df = make_frame()
    df.index = [10, 20, 30, 40, 50]
    df["c"] = df["c"].astype("category")
    df["x"] = df["x"].astype("Float64")
    df["pixels"] = df["pixels"].map(list)  # plain lists instead of arrays
    assert validate_frame(df, SOURCE, FEATURES, VALIDATION).success
    df["c"] = [1, 2, 1, 2, 3]  # integer codes are categories too
    assert validate_frame(df, SOURCE, FEATURES, VALIDATION).success


def test_missing_feature_column_is_reported_once():
    msg = failure_message(make_frame().drop(columns=["x"]))
    assert re.match(r"data validation failed: 1 of \d+ expectations failed on 5 rows", msg)
    assert "expect_column_to_exist on column 'x'" in msg
    assert "column 'x' is missing" in msg and "not evaluated" in msg


def test_nan_in_numeric_fails():
    df = make_frame()
    df.loc[2, "x"] = np.nan
    msg = failure_message(df)
    assert "expect_column_values_to_not_be_null on column 'x'" in msg
    assert "1 of 5 rows are null or NaN" in msg and '{"id": 3, "value": "nan"}' in msg


def test_inf_in_numeric_fails():
    df = make_frame()
    df.loc[1, "x"] = -np.inf
    msg = failure_message(df)
    assert "expect_column_values_to_not_be_in_set on column 'x'" in msg
    assert "1 of 5 values are infinite" in msg and '"value": "-inf"' in msg


def test_value_out_of_bounds_fails():
    df = make_frame()
    df.loc[4, "x"] = 11.5
    msg = failure_message(df)
    assert "expect_column_values_to_be_between on column 'x'" in msg
    assert "outside [0, 10]" in msg and '{"id": 5, "value": 11.5}' in msg


def test_duplicate_ids_fail():
    df = make_frame()
    df.loc[3, "id"] = 2
    msg = failure_message(df)
    assert "expect_column_values_to_be_unique on column 'id'" in msg
    assert "2 rows share 1 duplicated id value(s), e.g. [2]" in msg


def test_null_id_fails():
    df = make_frame()
    df["id"] = df["id"].astype("float64")
    df.loc[1, "id"] = np.nan
    msg = failure_message(df)
    assert "expect_column_values_to_not_be_null on column 'id'" in msg
    assert "1 of 5 rows have a null id" in msg and '{"row": 1}' in msg


def test_wrong_vector_length_fails():
    df = make_frame()
    df.at[2, "pixels"] = np.zeros(3)
    msg = failure_message(df)
    assert "on column 'pixels': expected list length 4, found lengths [3] in 1 of 5 rows" in msg
    assert '{"id": 3, "length": 3}' in msg


def test_non_finite_vector_element_fails():
    df = make_frame()
    df.at[0, "pixels"] = np.array([0.0, np.nan, np.inf, 1.0])
    msg = failure_message(df)
    assert "on column 'pixels': 1 of 5 vectors hold NaN, infinite or non-numeric elements" in msg
    assert '{"id": 1, "non_finite_elements": 2}' in msg


def _decoded(vectors: list[list[float]], n_keep: int | None = None) -> pd.DataFrame:
    """A frame as a Parquet/Arrow list column decodes: every vector a view of one array."""
    import pyarrow as pa

    n = len(vectors)
    table = pa.table({"id": np.arange(1, n + 1), "x": np.linspace(0.0, 10.0, n),
                      "c": ["a"] * n, "pixels": pa.array(vectors, type=pa.list_(pa.float32()))})
    df = table.to_pandas()
    assert len({id(v.base) for v in df["pixels"]}) == 1  # what the fast path relies on
    return df.iloc[:n_keep] if n_keep is not None else df


def test_decoded_vectors_are_checked_element_by_element():
    good = [[0.0, 1.0, 2.0, float(i)] for i in range(6)]
    assert validate_frame(_decoded(good), SOURCE, FEATURES, VALIDATION).success

    bad = [list(v) for v in good]
    bad[4][1] = float("nan")
    msg = failure_message(_decoded(bad))
    assert "on column 'pixels': 1 of 6 vectors hold NaN, infinite or non-numeric elements" in msg
    assert '{"id": 5, "non_finite_elements": 1}' in msg

    # The shared array holds a NaN, but only in a row this frame does not have.
    assert validate_frame(_decoded(bad, n_keep=4), SOURCE, FEATURES, VALIDATION).success

    short = [list(v) for v in good]
    short[2] = short[2][:3]
    msg = failure_message(_decoded(short))
    assert "on column 'pixels': expected list length 4, found lengths [3] in 1 of 6 rows" in msg


@pytest.mark.parametrize("value_type", ["float32", "float64", "int64"])
def test_arrow_backed_vectors_give_the_same_outcome_as_decoded_ones(value_type):
    """Partition tasks read list columns as Arrow arrays (``read_chunk(arrow_lists=True)``):
    every finding must be the one the same rows give as numpy arrays, including nulls inside
    vectors, null rows, empty and wrong-length vectors, and a frame that is a slice."""
    import pyarrow as pa

    floats = value_type.startswith("float")
    nan, inf = (float("nan"), float("inf")) if floats else (None, None)
    vectors = [[0.0, 1.0, 2.0, 3.0], [1.0, nan, inf, 3.0], [1.0, None, 2.0, 3.0], None,
               [1.0, 2.0, 3.0], [], [4.0, 5.0, 6.0, 7.0], [1.0, 2.0, 3.0, 4.0, 5.0]]
    if not floats:
        vectors = [None if v is None else [None if x is None else int(x) for x in v]
                   for v in vectors]
    n = len(vectors)
    pixels = pa.array(vectors, pa.list_(pa.type_for_alias(value_type)))
    table = pa.table({"id": np.arange(1, n + 1), "x": np.linspace(0.0, 10.0, n),
                      "c": ["a"] * n, "pixels": pixels})
    arrow = table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t)
                            else None)
    decoded = table.to_pandas()
    assert isinstance(arrow["pixels"].dtype, pd.ArrowDtype)
    for rows in (slice(None), slice(1, None), slice(0, 1)):
        a, d = arrow.iloc[rows], decoded.iloc[rows]
        results = [validate_frame(f, SOURCE, FEATURES, ValidationConfig(min_rows=1))
                   for f in (a, d)]
        a_results, d_results = ([dataclasses.replace(  # the frame's dtype is named: it differs
            r, details=re.sub(r" \(dtype [^)]*\)", "", r.details)) for r in res.results]
            for res in results)
        assert results[0].success == results[1].success and a_results == d_results
    msg = failure_message(arrow)
    assert "on column 'pixels': 2 of 8 vectors hold NaN, infinite or non-numeric elements" in msg
    assert '{"id": 2, "non_finite_elements": 2}, {"id": 3, "non_finite_elements": 1}' in msg
    assert "expected list length 4, found lengths [0, 3, 5] in 3 of 8 rows" in msg


def test_a_column_of_the_wrong_type_blocks_only_its_own_checks():
    df = make_frame()
    df["x"] = df["x"].astype(object)
    df.loc[1, "x"] = "abc"
    df.at[3, "pixels"] = np.zeros(5)
    df.loc[0, "c"] = None
    report = validate_frame(df, SOURCE, FEATURES, VALIDATION)
    failed = {(r.expectation, r.column) for r in report.failures()}
    assert failed == {("expect_column_values_to_be_in_set", "x"),
                      ("expect_column_values_to_be_in_set", "pixels")}, failed
    msg = failure_message(df)
    assert "found str in 1 of 5 rows" in msg and "3 dependent check(s)" in msg
    assert "expected list length 4, found lengths [5] in 1 of 5 rows" in msg
    evaluated = {(r.expectation, r.column) for r in report.results}
    assert ("expect_column_values_to_be_between", "x") not in evaluated  # blocked, not run
    assert ("expect_column_values_to_not_be_null", "pixels") in evaluated


def test_empty_frame_fails_on_row_count():
    msg = failure_message(make_frame().iloc[:0])
    assert "expect_table_row_count_to_be_between: found 0 rows, expected at least 3" in msg
    assert "min_rows" in msg


def test_below_min_rows_fails():
    msg = failure_message(make_frame(2))
    assert "found 2 rows, expected at least 3 (validation.min_rows)" in msg


def test_string_in_numeric_column_fails():
    df = make_frame()
    df["x"] = df["x"].astype(object)
    df.loc[3, "x"] = "abc"
    msg = failure_message(df)
    assert "expect_column_values_to_be_in_set on column 'x'" in msg
    assert "expected numbers (int or float), found str in 1 of 5 rows" in msg
    assert '{"id": 4, "value": "abc"}' in msg


def test_wrong_types_in_categorical_and_vector_fail():
    df = make_frame()
    df["c"] = df["c"].astype(object)
    df.loc[0, "c"] = 2.5
    df["pixels"] = df["pixels"].astype(object)
    df.at[1, "pixels"] = "0,1,2,3"
    msg = failure_message(df)
    assert "on column 'c': expected strings, integers or booleans, found float" in msg
    assert "on column 'pixels': expected lists or arrays of floats, found str" in msg


def test_missing_id_column_does_not_crash():
    msg = failure_message(make_frame().drop(columns=["id"]))
    assert "expect_column_to_exist on column 'id'" in msg and "2 dependent check(s)" in msg


def _write_suite(path, expectations) -> str:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="user", expectations=expectations)
    path.write_text(json.dumps(suite.to_json_dict()))
    return str(path)


def test_user_suite_expectations_are_added(tmp_path):
    import great_expectations.expectations as gxe

    suite_path = _write_suite(tmp_path / "suite.json", [
        gxe.ExpectColumnValuesToBeInSet(column="c", value_set=["a", "b"]),
        gxe.ExpectColumnMaxToBeBetween(column="x", max_value=100),
    ])
    validation = ValidationConfig(min_rows=3, suite_path=suite_path)
    suite = build_suite(SOURCE, FEATURES, validation)
    assert [e.configuration.type for e in suite.expectations][-2:] == [
        "expect_column_values_to_be_in_set", "expect_column_max_to_be_between"]
    msg = failure_message(make_frame(), validation)
    assert re.match(r"data validation failed: 1 of \d+ expectations", msg)  # max passed
    assert "expect_column_values_to_be_in_set on column 'c': 1 of 5 rows unexpected" in msg
    assert '["c"]' in msg


def test_bad_suite_path_or_content_raises_value_error(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="nope.json"):
        build_suite(SOURCE, FEATURES, ValidationConfig(suite_path=str(missing)))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        validate_frame(make_frame(), SOURCE, FEATURES, ValidationConfig(suite_path=str(bad_json)))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"name": "u", "expectations": [
        {"type": "expect_nonsense", "kwargs": {}}]}))
    with pytest.raises(ValueError, match=r"expectation #0 in suite file .*unknown.json"):
        build_suite(SOURCE, FEATURES, ValidationConfig(suite_path=str(unknown)))


def test_report_serialises_and_renders():
    df = make_frame()
    df.loc[0, "x"] = np.nan
    df.loc[1, "x"] = np.inf
    report = validate_frame(df, SOURCE, FEATURES, VALIDATION)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON
    assert data["success"] is False and data["n_rows"] == 5
    assert data["n_expectations"] == len(report.results) and data["n_failed"] >= 2
    md = report.to_markdown()
    rows = [line for line in md.splitlines() if line.startswith("| expect_")]
    assert len(rows) == len(report.results)
    assert sum("**FAILED**" in row for row in rows) == len(report.failures())


def test_error_pickles_with_its_report():
    df = make_frame()
    df.loc[0, "x"] = np.nan
    err = DataValidationError(validate_frame(df, SOURCE, FEATURES, VALIDATION))
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy.result, ValidationResult) and str(copy) == str(err)
    assert str(err).startswith("data validation failed: ")


def _bad_frame() -> pd.DataFrame:
    df = make_frame(8)
    df.loc[1, "x"] = np.nan  # null
    df.loc[2, "x"] = 11.0  # out of bounds
    df.at[3, "pixels"] = np.arange(3, dtype=np.float64)  # wrong length
    df.loc[4, "c"] = None
    return df


def test_an_expectation_builds_its_gx_configuration_once_per_validation_and_reports_the_same(
        monkeypatch, tmp_path):
    """GX rebuilds ``Expectation.configuration`` on every read, about 50 reads per expectation
    and call; inside ``configurations_kept`` (every validation) the first one built is kept.
    The report of a frame with every kind of failure is the one GX's own property gives, and
    outside the block (or in another thread) each read builds a new configuration again."""
    import threading

    import great_expectations.expectations as gxe
    from great_expectations.expectations.expectation import Expectation

    from decflow.data.validation import gx

    validation = ValidationConfig(min_rows=3, sample_size=3, suite_path=_write_suite(
        tmp_path / "suite.json", [gxe.ExpectColumnValuesToBeInSet(column="c", value_set=["a"]),
                                  gxe.ExpectColumnMaxToBeBetween(column="x", max_value=100)]))
    validate_frame(make_frame(8), SOURCE, FEATURES, validation)  # GX's property is replaced
    build, built = Expectation.configuration.fget, []

    def counted(self):
        built.append(self)
        return build(self)

    monkeypatch.setattr(Expectation, "configuration", gx.kept_property(counted))
    kept = validate_frame(_bad_frame(), SOURCE, FEATURES, validation)
    builds = len(built)
    built.clear()
    monkeypatch.setattr(gx, "configurations_kept", contextlib.nullcontext)  # GX's own reads
    reference = validate_frame(_bad_frame(), SOURCE, FEATURES, validation)
    assert 0 < 4 * builds < len(built)  # built once per expectation object, read many times
    assert kept.to_dict() == reference.to_dict()
    assert [r.sample for r in kept.results if not r.success] == [
        r.sample for r in reference.results if not r.success] and not kept.success

    monkeypatch.undo()
    expectation = gxe.ExpectColumnMaxToBeBetween(column="x", max_value=100)
    assert expectation.configuration is not expectation.configuration
    seen = {}
    with gx.configurations_kept():
        first = expectation.configuration
        assert expectation.configuration is first
        other = threading.Thread(target=lambda: seen.update(
            other=expectation.configuration is expectation.configuration))
        other.start()
        other.join()
    assert seen == {"other": False}
    assert expectation.configuration is not first
    assert expectation.configuration.to_json_dict() == first.to_json_dict()


def test_gx_evaluates_again_only_what_failed_and_reports_as_with_complete_results(
        monkeypatch, tmp_path):
    """Counts first (GX's ``BASIC`` results), then ``COMPLETE`` results (row positions, for
    the samples of offending rows) for the expectations that failed only: the report is the
    one every expectation evaluated with ``COMPLETE`` gives, and clean data is validated once."""
    import great_expectations.expectations as gxe

    from decflow.data.validation import gx

    validation = ValidationConfig(min_rows=3, sample_size=3, suite_path=_write_suite(
        tmp_path / "suite.json", [gxe.ExpectColumnValuesToBeInSet(column="c", value_set=["a"]),
                                  gxe.ExpectColumnMaxToBeBetween(column="x", max_value=100)]))
    validate = gx._validate
    calls = []

    def spy(frame, expectations, result_format):
        calls.append((len(expectations), result_format))
        return validate(frame, expectations, result_format)

    monkeypatch.setattr(gx, "_validate", spy)
    assert validate_frame(make_frame(8), SOURCE, FEATURES, validation).success is False  # "c"
    n = calls[0][0]
    assert calls == [(n, "BASIC"), (1, "COMPLETE")]
    calls.clear()
    assert check(validate_frame(make_frame(8), SOURCE, FEATURES, ValidationConfig(min_rows=3)))
    assert [f for _, f in calls] == ["BASIC"]
    calls.clear()
    report = validate_frame(_bad_frame(), SOURCE, FEATURES, validation)
    failed = [r for r in report.results if not r.success]
    assert calls[-1] == (len(failed), "COMPLETE") and len(failed) == 4  # the null, the bound,
    # the length and the user set (a null category is allowed; the user max passed)

    monkeypatch.setattr(gx, "_validate", lambda frame, expectations, result_format: validate(
        frame, expectations, "COMPLETE"))
    reference = validate_frame(_bad_frame(), SOURCE, FEATURES, validation)
    assert report.to_dict() == reference.to_dict()
    assert [r.sample for r in failed] == [[{"id": 2, "value": "nan"}], [{"id": 3, "value": 11.0}],
                                          [{"id": 4, "length": 3}], ["b", "c"]]
