"""Data validation with Great Expectations (GX 1.x), run before any training or scoring.

``build_suite`` turns the config into a GX ``ExpectationSuite``; ``validate_frame`` runs it on a
pandas DataFrame in an ephemeral GX context and returns a ``ValidationReport`` whose failures
name the expectation, the column, what was found and a few offending rows; ``check`` raises
``DataValidationError`` carrying that report.

Tables of any size are validated batch by batch: ``validate_batch`` runs every per-row
expectation on one batch and returns a small ``BatchValidation`` (counts, a few offending rows
with their partition); ``merge_batches`` adds batches up into one report and checks the
table-wide expectations on the totals: the row count, and id uniqueness from ``Duplicates``
(exact: ``find_duplicates`` over hash buckets of every batch's ids, see ``decflow.engine.partitions``).
``validate_frame`` is the one-batch case.

What the config-derived suite checks, in this order:

- the table holds at least ``validation.min_rows`` rows;
- the id column exists, has no nulls and no duplicates;
- every declared feature column exists and holds values of its kind. Types are checked per
  value, not per dtype, so object columns work and pandas 3 ``str``/``category`` dtypes are
  understood (GX 1.24's ``expect_column_values_to_be_in_type_list`` matches neither):

  - numeric: int or float values (bool is rejected: declare flags as categorical); no nulls
    (NaN counts as null), no ±inf, and within ``features.bounds[col]`` when given;
  - categorical: str, int or bool values, also as a ``category`` dtype; floats are rejected
    (continuous values, and 1 vs 1.0 would become two categories); nulls allowed (they go to
    the encoder's unknown bucket);
  - text: str values; nulls allowed;
  - vector: no nulls; each value a list, tuple or 1-d array of length ``features.vector[col]``
    whose elements are finite numbers;

- then the expectations of the optional user suite ``validation.suite_path`` (the JSON written
  by ``ExpectationSuite.to_json_dict()``).

GX has no expectation for a value's type kind, a list's length or its elements, so
``validate_frame`` derives helper columns on a copy of the frame (``<col>__type``,
``<col>__length``, ``<col>__nonfinite``) and checks those with standard expectations; reports
always name the original column. In the copy GX sees, a vector column holds its per-row kind
instead of the arrays (see ``_prepare_frame``), so user expectations on a vector column can
only test nullness. Checks on a column that is missing, or whose values have the
wrong type, are not evaluated: the one failed existence/type check says how many were skipped.

GX is imported lazily (it takes seconds) and its context is created once, on first use.
"""

import functools
import json
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from decflow.config import FeaturesConfig, SourceConfig, ValidationConfig
from decflow.errors import DataError

if TYPE_CHECKING:
    import great_expectations as gx

META_KEY = "decflow"  # expectation meta: {"decflow": {"column": original column, "check": ...}}
_ORDER_KEY = "decflow_order"  # added to run copies only, to put GX's results back in suite order

# Per-value kinds (see `_value_kind`) each feature kind accepts, and how messages describe them.
ALLOWED_KINDS = {
    "numeric": ["float", "int"],
    "categorical": ["bool", "int", "str"],
    "text": ["str"],
    "vector": ["list"],
}
_KIND_WORDS = {
    "numeric": "numbers (int or float)",
    "categorical": "strings, integers or booleans",
    "text": "strings",
    "vector": "lists or arrays of floats",
}
_STRUCTURAL = ("row_count", "exists", "type")


@dataclass(frozen=True)
class ExpectationResult:
    """Outcome of one expectation, in words.

    ``sample`` holds up to ``validation.sample_size`` offending rows as JSON-serialisable values:
    ``{"<id column>": id, "value": v}`` for scalar columns (``{"row": i, ...}`` when the id is
    unavailable), ``{"<id column>": id, "length": n}`` for vector lengths, duplicated id values
    for the uniqueness check; empty on success.
    """

    expectation: str  # GX expectation type, e.g. "expect_column_values_to_not_be_null"
    column: str | None  # the frame's column (never a derived helper column); None: table-level
    success: bool
    details: str
    sample: list = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)  # partitions with offending rows


@dataclass(frozen=True)
class ValidationReport:
    """All expectation results for one frame."""

    success: bool
    n_rows: int
    results: list[ExpectationResult]  # every expectation evaluated, in suite order

    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> str:
        """One line per failed expectation, or a single line saying everything passed."""
        failed = self.failures()
        if not failed:
            return f"all {len(self.results)} expectations passed on {self.n_rows} rows"
        lines = []
        for r in failed:
            where = f" on column '{r.column}'" if r.column is not None else ""
            if r.partitions:
                shown = ", ".join(r.partitions[:10]) + (", ..." if len(r.partitions) > 10 else "")
                where += f" in partition(s) {shown}"
            sample = f"; sample: {json.dumps(r.sample)}" if r.sample else ""
            lines.append(f"{r.expectation}{where}: {r.details}{sample}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable form (e.g. an MLflow artifact)."""
        return {
            "success": self.success,
            "n_rows": self.n_rows,
            "n_expectations": len(self.results),
            "n_failed": len(self.failures()),
            "results": [asdict(r) for r in self.results],
        }

    def to_markdown(self) -> str:
        """A heading line and a table with one row per expectation (e.g. a Prefect artifact)."""
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"**Data validation {verdict}**: {len(self.failures())} of {len(self.results)} "
            f"expectations failed on {self.n_rows} rows",
            "",
            "| expectation | column | result | details |",
            "|---|---|---|---|",
        ]
        for r in self.results:
            details = r.details + (f"; sample: {json.dumps(r.sample)}" if r.sample else "")
            cells = [r.expectation, r.column or "", "passed" if r.success else "**FAILED**", details]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines)


class DataValidationError(DataError):
    """Raised by ``check`` when a frame fails validation; ``.report`` holds every result."""

    def __init__(self, report: ValidationReport):
        self.report = report
        n_failed = len(report.failures())
        super().__init__(
            f"data validation failed: {n_failed} of {len(report.results)} expectations failed "
            f"on {report.n_rows} rows:\n{report.summary()}"
        )

    def __reduce__(self):  # picklable across processes (Prefect, Dask)
        return (type(self), (self.report,))


def build_suite(source: SourceConfig, features: FeaturesConfig,
                validation: ValidationConfig) -> "gx.ExpectationSuite":
    """The expectation suite the config implies, plus the user suite at ``validation.suite_path``.

    Expectations on vectors and on value types refer to helper columns (``<col>__type``,
    ``<col>__length``, ``<col>__nonfinite``) that ``validate_frame`` derives; each expectation's
    ``meta["decflow"]`` names the original column and the check.

    Raises:
        ValueError: the user suite file is missing, unreadable, not JSON or not a suite.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def meta(column: str | None, check: str, **extra) -> dict:
        return {META_KEY: {"column": column, "check": check, **extra}}

    id_col = source.id_column
    exps = [
        gxe.ExpectTableRowCountToBeBetween(min_value=validation.min_rows, max_value=None,
                                           meta=meta(None, "row_count")),
        gxe.ExpectColumnToExist(column=id_col, meta=meta(id_col, "exists", kind="id")),
        gxe.ExpectColumnValuesToNotBeNull(column=id_col, meta=meta(id_col, "not_null", kind="id")),
        gxe.ExpectColumnValuesToBeUnique(column=id_col, meta=meta(id_col, "unique", kind="id")),
    ]
    for col, kind in _feature_kinds(features).items():
        exps += [
            gxe.ExpectColumnToExist(column=col, meta=meta(col, "exists", kind=kind)),
            gxe.ExpectColumnValuesToBeInSet(column=_helper(col, "type"),
                                            value_set=ALLOWED_KINDS[kind],
                                            meta=meta(col, "type", kind=kind)),
        ]
        if kind == "numeric":
            exps += [
                gxe.ExpectColumnValuesToNotBeNull(column=col, meta=meta(col, "not_null", kind=kind)),
                gxe.ExpectColumnValuesToNotBeInSet(column=col, value_set=[math.inf, -math.inf],
                                                   meta=meta(col, "finite", kind=kind)),
            ]
            lo, hi = features.bounds.get(col, (None, None))
            if lo is not None or hi is not None:
                exps.append(gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=lo, max_value=hi,
                    meta=meta(col, "bounds", kind=kind, min=lo, max=hi)))
        elif kind == "vector":
            n = features.vector[col]
            exps += [
                gxe.ExpectColumnValuesToNotBeNull(column=col, meta=meta(col, "not_null", kind=kind)),
                gxe.ExpectColumnValuesToBeInSet(column=_helper(col, "length"), value_set=[n],
                                                meta=meta(col, "length", kind=kind, length=n)),
                gxe.ExpectColumnValuesToBeInSet(column=_helper(col, "nonfinite"), value_set=[0],
                                                meta=meta(col, "elements", kind=kind)),
            ]
    if validation.suite_path:
        exps += _load_user_expectations(validation.suite_path)
    # The constructor keeps every expectation (add_expectation would drop "equalish" repeats).
    return gx.ExpectationSuite(name="decflow", expectations=exps)


def validate_frame(df: pd.DataFrame, source: SourceConfig, features: FeaturesConfig,
                   validation: ValidationConfig) -> ValidationReport:
    """Run the suite from ``build_suite`` on ``df``; never raises for bad data (see ``check``).

    The in-memory form of ``validate_batch`` + ``merge_batches``: ``df`` is one batch.

    Args:
        df: rows to validate, shape (n_rows, n_columns); not modified.

    Returns:
        ValidationReport with one result per evaluated expectation, in suite order.

    Raises:
        ValueError: ``df`` is not a DataFrame, has duplicate column names, or the user suite
            file is unusable.
    """
    batch = validate_batch(df, source, features, validation)
    dups = None
    if source.id_column in df.columns:
        per_day = validation.unique_ids == "partition" and source.date_column in df.columns
        days = (pd.factorize(df[source.date_column])[0] if per_day else None)
        dups = find_duplicates([(df[source.id_column].to_numpy(dtype=object), days)],
                               validation.sample_size, per_partition=per_day)
    return merge_batches([batch], dups, source, features, validation)


@dataclass
class _Partial:
    """One expectation's outcome on one batch, in a form that adds up over batches."""

    success: bool
    unexpected: int = 0
    elements: int = 0
    values: list = field(default_factory=list)  # distinct unexpected values (kinds, lengths)
    sample: list = field(default_factory=list)  # offending rows, at most sample_size
    partitions: list = field(default_factory=list)
    error: str | None = None
    observed: Any = None
    has_count: bool = False  # GX reported unexpected_count (user expectations)
    skipped: int = 0  # dependent checks not evaluated because this one failed
    dtype: str = ""

    def add(self, other: "_Partial", size: int) -> "_Partial":
        return _Partial(
            success=self.success and other.success,
            unexpected=self.unexpected + other.unexpected,
            elements=self.elements + other.elements,
            values=_dedupe(self.values + other.values)[:64],
            sample=(self.sample + other.sample)[:size],
            partitions=_dedupe(self.partitions + other.partitions),
            error=self.error or other.error,
            observed=self.observed if not self.success or other.success else other.observed,
            has_count=self.has_count or other.has_count,
            skipped=max(self.skipped, other.skipped),
            dtype=", ".join(_dedupe([d for d in (self.dtype, other.dtype) if d])))


@dataclass(frozen=True)
class BatchValidation:
    """The suite's outcome on one batch of rows: small, picklable, added up by ``merge_batches``.

    Table-wide checks (row count, id uniqueness) are not in it: ``merge_batches`` evaluates
    them over all batches.
    """

    n_rows: int
    partials: dict  # suite index -> _Partial; absent: not evaluated on this batch
    columns: list[str]  # the batch's columns (for "missing column" messages)

    @property
    def ok(self) -> bool:
        """No per-row expectation failed on this batch."""
        return all(p.success for p in self.partials.values())


@dataclass(frozen=True)
class Duplicates:
    """Ids that occur more than once across every batch (exact)."""

    n_rows: int  # rows whose id is shared with another row
    n_values: int  # distinct duplicated ids
    sample: list  # up to sample_size duplicated ids
    partitions: list[str]  # partitions holding a duplicated id


def find_duplicates(parts: list[tuple[np.ndarray, np.ndarray | None]], sample_size: int,
                    partition_names: list[str] | None = None, per_partition: bool = False
                    ) -> Duplicates:
    """Exact duplicate ids over ``parts`` (ids, partition codes or None); nulls are ignored.

    With ``per_partition`` an id may repeat across partitions (daily snapshot tables) and
    only repeats within one partition count. Over Dask, ids are first split by hash into
    buckets so each call sees one bucket of the whole window (see ``decflow.engine.partitions``); here
    they only need to fit one process.
    """
    if per_partition and parts:
        groups: dict[int, list] = {}
        for ids, codes in parts:
            ids = np.asarray(ids)
            codes = codes if codes is not None else np.full(len(ids), -1)
            for c in np.unique(codes):
                groups.setdefault(int(c), []).append((ids[codes == c], codes[codes == c]))
        return merge_duplicates([find_duplicates(g, sample_size, partition_names)
                                 for g in groups.values()], sample_size)
    arrays = [np.asarray(p) for p, _ in parts]
    codes = (np.concatenate([c if c is not None else np.full(len(p), -1)
                             for p, c in zip(arrays, (c for _, c in parts))])
             if parts else np.empty(0, np.int64))
    names = partition_names or []
    if arrays and all(a.dtype.kind in "iuf" for a in arrays):
        # numbers: sort once (NaN is null and left out); equal neighbours are duplicates
        ids = np.concatenate(arrays)
        keep = ~np.isnan(ids) if ids.dtype.kind == "f" else np.ones(len(ids), bool)
        ids, codes = ids[keep], codes[keep]
        order = np.argsort(ids, kind="stable")
        s = ids[order]
        same = s[1:] == s[:-1]
        dup_sorted = np.zeros(len(s), bool)
        dup_sorted[1:] |= same
        dup_sorted[:-1] |= same
        dup = np.zeros(len(s), bool)
        dup[order] = dup_sorted
        values = _dedupe([_jsonable(v) for v in ids[dup][:100 * sample_size].tolist()])
        n_values = int(len(np.unique(ids[dup])))
    else:
        series = pd.Series(np.concatenate(arrays).astype(object) if arrays else [],
                           dtype=object)
        keep = ~series.isna().to_numpy()
        series, codes = series[keep].reset_index(drop=True), codes[keep]
        dup = series.duplicated(keep=False).to_numpy()
        values = _dedupe([_jsonable(v) for v in series[dup].head(100 * sample_size).tolist()])
        n_values = int(series[dup].nunique())
    return Duplicates(int(dup.sum()), n_values, values[:sample_size],
                      sorted({names[c] for c in np.unique(codes[dup]) if 0 <= c < len(names)}))


def merge_duplicates(parts: list[Duplicates], sample_size: int) -> Duplicates:
    """Add up ``Duplicates`` of disjoint id buckets."""
    return Duplicates(sum(p.n_rows for p in parts), sum(p.n_values for p in parts),
                      [v for p in parts for v in p.sample][:sample_size],
                      sorted({d for p in parts for d in p.partitions}))


def validate_batch(df: pd.DataFrame, source: SourceConfig, features: FeaturesConfig,
                   validation: ValidationConfig, partition: str | None = None,
                   first_row: int = 0) -> BatchValidation:
    """Every per-row expectation of the suite on one batch of rows.

    Args:
        df: the batch, (n_rows, n_columns); not modified.
        partition: the batch's partition (e.g. ``ds=2026-11-24``), named in samples.
        first_row: position of the batch's first row in its file, for rows without an id.

    Raises:
        ValueError: ``df`` is not a DataFrame, has duplicate column names, or the user suite
            file is unusable.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise ValueError(f"frame has duplicate column names: {dup}")

    expectations = _suite(source, features, validation)
    frame, data = _prepare_frame(df, features)
    ctx = _Context(frame, data, source.id_column, validation, len(df), partition, first_row)
    specs = [_spec(e) for e in expectations]
    present = set(frame.columns)
    partials: dict[int, _Partial] = {}
    table_wide = {i for i, s in enumerate(specs) if s["check"] in ("row_count", "unique")}

    # Phase 1: existence and value types; later checks depend on their outcome.
    phase1 = [i for i, s in enumerate(specs)
              if s["check"] == "exists" or (s["check"] == "type" and s["column"] in present)]
    for i, r in zip(phase1, _run(frame, [expectations[i] for i in phase1])):
        partials[i] = _partial(specs[i], r, ctx)
    blocked = {s["column"] for i, s in enumerate(specs)
               if i in partials and s["check"] in ("exists", "type") and not partials[i].success}
    blocked |= {s["column"] for s in specs
                if s["check"] != "user" and s["column"] is not None and s["column"] not in present}

    # Phase 2: values, on columns that exist and hold the right kind of values.
    phase2, skipped = [], {}
    for i, s in enumerate(specs):
        if i in partials or s["check"] == "row_count":
            continue
        if s["column"] in blocked:
            skipped[s["column"]] = skipped.get(s["column"], 0) + 1
        elif i in table_wide:
            partials[i] = _Partial(success=True)  # evaluated by merge_batches
        elif s["check"] == "user" and s["column"] is not None and s["column"] not in present:
            partials[i] = _Partial(success=False, error=f"column '{s['column']}' is missing",
                                   partitions=[partition] if partition else [])
        else:
            phase2.append(i)
    for i, r in zip(phase2, _run(frame, [expectations[i] for i in phase2])):
        partials[i] = _partial(specs[i], r, ctx)

    # The failed existence/type check says what it blocked, so a missing column is reported once.
    for i, s in enumerate(specs):
        p = partials.get(i)
        if p is not None and not p.success and s["check"] in ("exists", "type"):
            p.skipped = skipped.pop(s["column"], 0)
    return BatchValidation(len(df), partials, [str(c) for c in data.columns])


def merge_batches(batches: list[BatchValidation], duplicates: Duplicates | None,
                  source: SourceConfig, features: FeaturesConfig,
                  validation: ValidationConfig) -> ValidationReport:
    """One report for all batches: counts add up, samples fill up to ``sample_size``.

    The row count is checked on the total; id uniqueness on ``duplicates`` (exact, from
    ``find_duplicates`` over every batch's ids; None when the id column is missing). A user
    expectation on an aggregate (a column's max, mean, ...) is checked on each batch and
    passes when it passes on every batch.
    """
    expectations = _suite(source, features, validation)
    specs = [_spec(e) for e in expectations]
    size = validation.sample_size
    n_rows = sum(b.n_rows for b in batches)
    merged: dict[int, _Partial] = {}
    for b in batches:
        for i, p in b.partials.items():
            merged[i] = merged[i].add(p, size) if i in merged else p
    columns = batches[0].columns if batches else []
    results = {}
    for i, spec in enumerate(specs):
        if spec["check"] == "row_count":
            ok = n_rows >= validation.min_rows
            results[i] = ExpectationResult(
                spec["type"], None, ok, f"found {n_rows} rows, expected at least "
                                        f"{validation.min_rows} (validation.min_rows)")
        elif spec["check"] == "unique" and i in merged and duplicates is not None:
            d = duplicates
            details = (f"{d.n_rows} rows share {d.n_values} duplicated id value(s), e.g. "
                       f"{json.dumps(d.sample)}") if d.n_rows else "all unique"
            results[i] = ExpectationResult(spec["type"], spec["column"], not d.n_rows, details,
                                           d.sample, d.partitions)
        elif i in merged:
            results[i] = _words(spec, merged[i], n_rows, validation, columns)
    ordered = [results[i] for i in sorted(results)]
    return ValidationReport(success=all(r.success for r in ordered), n_rows=n_rows,
                            results=ordered)


def check(report: ValidationReport) -> ValidationReport:
    """Return ``report`` if it passed, else raise ``DataValidationError`` naming each failure."""
    if not report.success:
        raise DataValidationError(report)
    return report


# --- GX plumbing ----------------------------------------------------------------------------------

_LOCK = threading.Lock()  # GX's pandas engine keeps per-datasource state; validate one at a time
_BATCH_DEFINITION = None


def _batch_definition():
    """The cached whole-dataframe batch definition of an ephemeral context (call under _LOCK)."""
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        # No analytics calls from a nightly job, and no tqdm bars per metric in the logs.
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        asset = context.data_sources.add_pandas("decflow").add_dataframe_asset("frame")
        _BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole")
    return _BATCH_DEFINITION


def _run(frame: pd.DataFrame, expectations: list) -> list:
    """GX validation results for ``expectations`` on ``frame``, in the order given."""
    if not expectations:
        return []
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    tagged = []
    for i, e in enumerate(expectations):
        conf = e.configuration.to_json_dict()
        conf.pop("id", None)
        conf["meta"] = {**(conf.get("meta") or {}), _ORDER_KEY: i}
        tagged.append(ExpectationConfiguration(**conf))
    suite = gx.ExpectationSuite(name="decflow_run", expectations=tagged)
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        # COMPLETE: unexpected_index_list gives row positions, from which samples are drawn.
        outcome = batch.validate(suite, result_format="COMPLETE")
    ordered: list = [None] * len(expectations)
    for r in outcome.results:  # GX does not keep suite order (errored expectations come first)
        ordered[r.expectation_config.meta[_ORDER_KEY]] = r
    return ordered


def _load_user_expectations(path: str) -> list:
    """Expectations from a suite JSON file, each tagged as a user check."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read expectation suite file {p}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"expectation suite file {p} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ValueError(f"expectation suite file {p} must hold a JSON object with an "
                         f"'expectations' list (as written by ExpectationSuite.to_json_dict())")
    out = []
    for i, conf in enumerate(data["expectations"]):
        try:
            conf = {k: v for k, v in dict(conf).items() if k != "id"}  # ids bind to a saved suite
            conf["meta"] = {**(conf.get("meta") or {}),
                            META_KEY: {"column": (conf.get("kwargs") or {}).get("column"),
                                       "check": "user", "source": str(p)}}
            out.append(ExpectationConfiguration(**conf).to_domain_obj())
        except Exception as e:  # GX raises unrelated types: not found, pydantic, TypeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"expectation #{i} in suite file {p} is invalid: {first}") from e
    return out


# --- helper columns -------------------------------------------------------------------------------

def _feature_kinds(features: FeaturesConfig) -> dict[str, str]:
    return {**{c: "numeric" for c in features.numeric},
            **{c: "categorical" for c in features.categorical},
            **{c: "vector" for c in features.vector},
            **{c: "text" for c in features.text}}


def _helper(column: str, what: str) -> str:
    return f"{column}__{what}"


def _prepare_frame(df: pd.DataFrame, features: FeaturesConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame GX validates, and ``df`` with a RangeIndex (for samples).

    Both have a RangeIndex, so GX's unexpected indices are row positions. The GX frame adds the
    helper columns and replaces each vector column by its per-row kind (same nulls): GX hashes
    every batch it loads and falls back to pickling the whole frame when a column holds
    unhashable arrays, which for 10k x 64 vectors cost more than the validation itself.
    """
    data = df.reset_index(drop=True)
    helpers, stand_ins = {}, {}
    for col, kind in _feature_kinds(features).items():
        if col not in data.columns:
            continue
        helpers[_helper(col, "type")] = _value_kinds(data[col])
        if kind == "vector":
            stand_ins[col] = helpers[_helper(col, "type")]
            helpers[_helper(col, "length")], helpers[_helper(col, "nonfinite")] = \
                _vector_stats(data[col])
    return data.assign(**stand_ins, **helpers), data


_KIND_OF_TYPE: dict[type, str] = {}


def _cached_kind(v: Any) -> str:
    """``_value_kind`` through a per-type cache (a kind depends on the value's type only)."""
    t = type(v)
    kind = _KIND_OF_TYPE.get(t)
    if kind is None:
        kind = _KIND_OF_TYPE[t] = _value_kind(v)
    return kind


def _value_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "list"
    return type(v).__name__


def _dtype_kind(dtype) -> str | None:
    """The kind every non-null value of ``dtype`` has, or None when values must be looked at."""
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if isinstance(dtype, pd.StringDtype):
        return "str"
    return None


def _value_kinds(s: pd.Series) -> pd.Series:
    """Per-row value kind ("int", "float", "bool", "str", "list" or a type name); None if null."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = _value_kinds(pd.Series(s.dtype.categories)).to_numpy(dtype=object)
        codes = s.cat.codes.to_numpy()
        out = np.full(len(s), None, dtype=object)
        out[codes >= 0] = cats[codes[codes >= 0]]
        return pd.Series(out, index=s.index, dtype=object)
    kind = _dtype_kind(s.dtype)
    if kind is not None:
        out = np.full(len(s), kind, dtype=object)
    else:
        out = np.empty(len(s), dtype=object)
        out[:] = [_cached_kind(v) for v in s.to_numpy(dtype=object)]
    out[s.isna().to_numpy()] = None
    return pd.Series(out, index=s.index, dtype=object)


def _vector_stats(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per-row list length and count of non-finite/non-numeric elements; <NA> for non-lists.

    Numeric 1-d arrays (what Parquet list columns become) of the most common length are
    checked in one vectorised pass; other values one by one.
    """
    n = len(s)
    lengths = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=np.int64)
    missing = np.ones(n, dtype=bool)
    values = s.to_numpy(dtype=object)
    fast = np.fromiter((type(v) is np.ndarray and v.ndim == 1 and v.dtype.kind in "iuf"
                        for v in values), dtype=bool, count=n)
    if fast.any():
        rows = np.flatnonzero(fast)
        lens = np.fromiter((len(values[i]) for i in rows), dtype=np.int64, count=len(rows))
        common = np.bincount(lens).argmax()
        rows = rows[lens == common]
        if len(rows) and common:
            block = np.stack(values[rows])
            bad[rows] = common - np.isfinite(block).sum(axis=1)
        lengths[rows], missing[rows] = common, False
        fast[:] = False
        fast[rows] = True
    for i in np.flatnonzero(~fast):
        v = values[i]
        if isinstance(v, (list, tuple, np.ndarray)):
            lengths[i], bad[i], missing[i] = len(v), _n_bad_elements(v), False
    return (pd.Series(pd.arrays.IntegerArray(lengths, missing.copy()), index=s.index),
            pd.Series(pd.arrays.IntegerArray(bad, missing), index=s.index))


def _n_bad_elements(v) -> int:
    """How many elements of one vector are not finite real numbers (nested counts as bad)."""
    try:
        a = np.asarray(v)
    except ValueError:  # ragged nesting
        return len(v)
    if a.ndim != 1:
        return len(v)
    if a.dtype.kind in "biuf":
        return int(a.size - np.count_nonzero(np.isfinite(a)))
    if a.dtype.kind == "O":
        return sum(1 for x in a if isinstance(x, (bool, np.bool_, str))
                   or not isinstance(x, (int, float, np.number)) or not math.isfinite(x))
    return int(a.size)  # strings, dates, ...


# --- describing results ---------------------------------------------------------------------------

@dataclass
class _Context:
    """What a batch's result descriptions need besides the GX result."""

    frame: pd.DataFrame  # what GX validates (helper columns, vector stand-ins)
    data: pd.DataFrame  # the caller's frame with a RangeIndex
    id_column: str
    validation: ValidationConfig
    n_rows: int
    partition: str | None = None
    first_row: int = 0


def _suite(source: SourceConfig, features: FeaturesConfig, validation: ValidationConfig) -> list:
    """The suite's expectations, built once per process and config (batches share it)."""
    return _suite_cached(source.model_dump_json(), features.model_dump_json(),
                         validation.model_dump_json())


@functools.lru_cache(maxsize=8)
def _suite_cached(source: str, features: str, validation: str) -> list:
    return list(build_suite(SourceConfig.model_validate_json(source),
                            FeaturesConfig.model_validate_json(features),
                            ValidationConfig.model_validate_json(validation)).expectations)


def _spec(expectation) -> dict:
    conf = expectation.configuration
    tag = (conf.meta or {}).get(META_KEY) or {}
    return {"type": conf.type, "kwargs": conf.kwargs, "check": tag.get("check", "user"),
            "column": tag.get("column", conf.kwargs.get("column")), "meta": tag}


def _partial(spec: dict, r, ctx: _Context) -> _Partial:
    """One GX ExpectationValidationResult on a batch, as counts and a sample of offending rows."""
    where = [ctx.partition] if ctx.partition else []
    if r is None:  # GX dropped the expectation (it logs invalid configurations and moves on)
        return _Partial(success=False, error="not evaluated by GX", partitions=where)
    res = r.result or {}
    error = _exception_message(r.exception_info)
    if error:
        return _Partial(success=False, error=f"could not be evaluated: {error}", partitions=where)
    col, check, tag = spec["column"], spec["check"], spec["meta"]
    size = ctx.validation.sample_size
    p = _Partial(success=bool(r.success), unexpected=res.get("unexpected_count") or 0,
                 elements=res.get("element_count", ctx.n_rows),
                 partitions=[] if r.success else where)
    if check == "type":
        p.dtype = str(ctx.data[col].dtype)
        p.values = sorted({str(x) for x in res.get("unexpected_list", [])})
        p.sample = _row_sample(ctx, res, col, size)
    elif check == "not_null":
        p.sample = _row_sample(ctx, res, col, size, value=tag.get("kind") == "numeric")
    elif check in ("finite", "bounds"):
        p.sample = _row_sample(ctx, res, col, size)
    elif check == "length":
        p.values = sorted({int(x) for x in res.get("unexpected_list", [])})
        p.sample = _row_sample(ctx, res, col, size, key="length",
                               values=ctx.frame[_helper(col, "length")])
    elif check == "elements":
        p.sample = _row_sample(ctx, res, col, size, key="non_finite_elements",
                               values=ctx.frame[_helper(col, "nonfinite")])
    elif check == "user":
        p.has_count = "unexpected_count" in res
        p.sample = [_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:size]]
        p.observed = _jsonable(res["observed_value"]) if "observed_value" in res else None
    if r.success:
        p.sample = []
    return p


def _words(spec: dict, p: _Partial, n_rows: int, validation: ValidationConfig,
           columns: list[str]) -> ExpectationResult:
    """An expectation's merged outcome in words."""
    col, check, tag = spec["column"], spec["check"], spec["meta"]
    k, total = p.unexpected, p.elements
    if p.error:
        return ExpectationResult(spec["type"], col, False, p.error, [], p.partitions)
    if check == "exists":
        if p.success:
            details = "present"
        else:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            details = f"column '{col}' is missing (frame has: {shown})"
    elif check == "type":
        if p.success:
            details = f"all values are {_KIND_WORDS[tag['kind']]} (dtype {p.dtype})"
        else:
            details = (f"expected {_KIND_WORDS[tag['kind']]}, found {', '.join(p.values)} in "
                       f"{k} of {total} rows (dtype {p.dtype})")
    elif check == "not_null":
        what = "have a null id" if tag.get("kind") == "id" else (
            "are null or NaN" if tag.get("kind") == "numeric" else "are null")
        details = f"{k} of {total} rows {what}" if k else "no nulls"
    elif check == "finite":
        details = f"{k} of {total} values are infinite" if k else "no infinite values"
    elif check == "bounds":
        rng = f"[{_fmt(tag.get('min'), '-inf')}, {_fmt(tag.get('max'), 'inf')}]"
        details = f"{k} of {total} values are outside {rng}" if k else f"all within {rng}"
    elif check == "length":
        n = tag["length"]
        details = (f"expected list length {n}, found lengths {p.values} in {k} of {total} rows"
                   if k else f"all of length {n}")
    elif check == "elements":
        details = (f"{k} of {total} vectors hold NaN, infinite or non-numeric elements"
                   if k else "all elements finite")
    elif p.has_count:  # user expectations: whatever GX reports
        details = f"{k} of {total} rows unexpected" if k else f"all {total} rows as expected"
    elif p.observed is not None:
        details = f"observed {p.observed}"
    else:
        details = "passed" if p.success else "failed"
    if p.skipped and not p.success:
        details += f"; {p.skipped} dependent check(s) on it not evaluated"
    return ExpectationResult(spec["type"], col, p.success, details,
                             [] if p.success else p.sample, p.partitions)


def _row_sample(ctx: _Context, res: dict, col: str, size: int, *, value: bool = True,
                key: str = "value", values: pd.Series | None = None) -> list:
    """Up to ``size`` offending rows as ``{id column: id, key: value}`` (``row`` if no id)."""
    positions = res.get("unexpected_index_list") or []
    data = ctx.data
    has_id = ctx.id_column in data.columns
    src = values if values is not None else data[col]
    out = []
    for pos in positions[:size]:
        pos = int(pos)
        ident = data[ctx.id_column].iloc[pos] if has_id else None
        row = {ctx.id_column: _jsonable(ident)} if has_id and not _is_null(ident) \
            else {"row": ctx.first_row + pos}
        if ctx.partition:
            row = {"partition": ctx.partition, **row}
        if value:
            row[key] = _jsonable(src.iloc[pos])
        out.append(row)
    return out


def _exception_message(info) -> str | None:
    """The first exception message in GX's exception_info (flat, or keyed by metric id)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error").strip().splitlines()[0]
    for v in info.values():
        msg = _exception_message(v)
        if msg:
            return msg
    return None


def _dedupe(values: list) -> list:
    seen, out = set(), []
    for v in values:
        key = repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _is_null(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # arrays
        return False


def _jsonable(v: Any) -> Any:
    """A JSON-safe, short rendering of one cell (non-finite floats as "nan"/"inf"/"-inf")."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else str(float(v))
    if isinstance(v, (list, tuple, np.ndarray)):
        items = [_jsonable(x) for x in list(v)[:8]]
        return items + ["..."] if len(v) > 8 else items
    text = v if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt(x, open_end: str) -> str:
    return open_end if x is None else f"{x:g}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
