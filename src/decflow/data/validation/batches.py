"""Validating a table batch by batch: ``validate_batch`` on each batch, ``merge_batches`` for
the table-wide checks (row count, id uniqueness); ``validate_frame`` is the one-batch case."""

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
import pandas as pd
from decflow.config import FeaturesConfig, SourceConfig, ValidationConfig
from decflow.data.validation.columns import prepare_frame
from decflow.data.validation.duplicates import Duplicates, find_duplicates
from decflow.data.validation.gx import run_expectations
from decflow.data.validation.results import ExpectationResult, ValidationResult
from decflow.data.validation.suite import suite_expectations
from decflow.data.validation.wording import (Context, Partial, describe, expectation_spec,
                                             partial_result)
if TYPE_CHECKING:
    pass


def validate_frame(df: pd.DataFrame, source: SourceConfig, features: FeaturesConfig,
                   validation: ValidationConfig) -> ValidationResult:
    """Run the suite from ``build_suite`` on ``df``; never raises for bad data (see ``check``).

    The in-memory form of ``validate_batch`` + ``merge_batches``: ``df`` is one batch.

    Args:
        df: rows to validate, shape (n_rows, n_columns); not modified.

    Returns:
        ValidationResult with one result per evaluated expectation, in suite order.

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


@dataclass(frozen=True)
class BatchValidation:
    """The suite's outcome on one batch of rows: small, picklable, added up by ``merge_batches``.

    Table-wide checks (row count, id uniqueness) are not in it: ``merge_batches`` evaluates
    them over all batches.
    """

    n_rows: int
    partials: dict  # suite index -> Partial; absent: not evaluated on this batch
    columns: list[str]  # the batch's columns (for "missing column" messages)

    @property
    def ok(self) -> bool:
        """No per-row expectation failed on this batch."""
        return all(p.success for p in self.partials.values())


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

    expectations = suite_expectations(source, features, validation)
    frame, data = prepare_frame(df, features)
    ctx = Context(frame, data, source.id_column, validation, len(df), partition, first_row)
    specs = [expectation_spec(e) for e in expectations]
    present = set(frame.columns)
    partials: dict[int, Partial] = {}

    # Phase 1: existence and value types; later checks depend on their outcome.
    phase1 = [i for i, s in enumerate(specs)
              if s["check"] == "exists" or (s["check"] == "type" and s["column"] in present)]
    missing = {s["column"] for s in specs
               if s["check"] != "user" and s["column"] is not None and s["column"] not in present}
    # Phase 2: values, on columns that exist and hold the right kind of values. It runs in the
    # same GX pass as phase 1 (one batch load, one metric graph); when a phase-1 check fails,
    # phase 2 runs again without the columns that check blocks.
    decided, skipped = {}, {}
    phase2 = _value_checks(specs, set(phase1), missing, decided, skipped, present, partition)
    first = run_expectations(frame, [expectations[i] for i in phase1 + phase2])
    for i, r in zip(phase1, first):
        partials[i] = partial_result(specs[i], r, ctx)
    blocked = missing | {specs[i]["column"] for i in phase1 if not partials[i].success}
    results = first[len(phase1):]
    if blocked != missing:
        decided, skipped = {}, {}
        phase2 = _value_checks(specs, set(phase1), blocked, decided, skipped, present, partition)
        results = run_expectations(frame, [expectations[i] for i in phase2])
    partials.update(decided)
    for i, r in zip(phase2, results):
        partials[i] = partial_result(specs[i], r, ctx)

    # The failed existence/type check says what it blocked, so a missing column is reported once.
    for i, s in enumerate(specs):
        p = partials.get(i)
        if p is not None and not p.success and s["check"] in ("exists", "type"):
            p.skipped = skipped.pop(s["column"], 0)
    return BatchValidation(len(df), partials, [str(c) for c in data.columns])


def _value_checks(specs: list[dict], phase1: set, blocked: set, decided: dict, skipped: dict,
                  present: set, partition: str | None) -> list[int]:
    """Suite positions of the value checks GX evaluates when ``blocked`` columns are skipped.

    Fills ``decided`` with the checks settled without GX (table-wide ones, user checks on a
    missing column) and counts the ``skipped`` checks per blocked column.
    """
    out = []
    for i, s in enumerate(specs):
        if i in phase1 or s["check"] == "row_count":
            continue
        if s["column"] in blocked:
            skipped[s["column"]] = skipped.get(s["column"], 0) + 1
        elif s["check"] == "unique":
            decided[i] = Partial(success=True)  # evaluated by merge_batches
        elif s["check"] == "user" and s["column"] is not None and s["column"] not in present:
            decided[i] = Partial(success=False, error=f"column '{s['column']}' is missing",
                                 partitions=[partition] if partition else [])
        else:
            out.append(i)
    return out


def suite_specs(source: SourceConfig, features: FeaturesConfig,
                validation: ValidationConfig) -> list[dict]:
    """The suite's expectations as plain dicts (type, kwargs, check, column, meta): what
    ``merge_batches`` needs, small and picklable, so a process that only merges (a run's
    client) can take them from a worker and never import Great Expectations."""
    return [expectation_spec(e) for e in suite_expectations(source, features, validation)]


def merge_batches(batches: list[BatchValidation], duplicates: Duplicates | None,
                  source: SourceConfig, features: FeaturesConfig,
                  validation: ValidationConfig, specs: list[dict] | None = None
                  ) -> ValidationResult:
    """One result for all batches: counts add up, samples fill up to ``sample_size``.

    The row count is checked on the total; id uniqueness on ``duplicates`` (exact, from
    ``find_duplicates`` over every batch's ids; None when the id column is missing). A user
    expectation on an aggregate (a column's max, mean, ...) is checked on each batch and
    passes when it passes on every batch. ``specs``: ``suite_specs`` of these settings, when
    already at hand (built here otherwise).
    """
    if specs is None:
        specs = suite_specs(source, features, validation)
    size = validation.sample_size
    n_rows = sum(b.n_rows for b in batches)
    merged: dict[int, Partial] = {}
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
            results[i] = describe(spec, merged[i], n_rows, validation, columns)
    ordered = [results[i] for i in sorted(results)]
    return ValidationResult(success=all(r.success for r in ordered), n_rows=n_rows,
                            results=ordered)
