"""Data validation with Great Expectations (GX 1.x), run before any training or scoring.

``build_suite`` turns the config into a GX ``ExpectationSuite``; ``validate_frame`` runs it on a
pandas DataFrame in an ephemeral GX context and returns a ``ValidationResult`` whose failures
name the expectation, the column, what was found and a few offending rows; ``check`` raises
``DataValidationError`` carrying that result.

Tables of any size are validated batch by batch: ``validate_batch`` runs every per-row
expectation on one batch and returns a small ``BatchValidation`` (counts, a few offending rows
with their partition); ``merge_batches`` adds batches up into one result and checks the
table-wide expectations on the totals: the row count, and id uniqueness from ``Duplicates``
(exact: ``find_duplicates`` over hash buckets of every batch's ids, see
``decflow.engine.partitions``).
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
instead of the arrays (see ``prepare_frame``), so user expectations on a vector column can
only test nullness. Checks on a column that is missing, or whose values have the
wrong type, are not evaluated: the one failed existence/type check says how many were skipped.

GX is imported lazily (it takes seconds) and its context is created once, on first use.
"""

from decflow.data.validation.batches import (BatchValidation, merge_batches, suite_specs,
                                             validate_batch, validate_frame)
from decflow.data.validation.duplicates import Duplicates, find_duplicates, merge_duplicates
from decflow.data.validation.results import (DataValidationError, ExpectationResult,
                                             ValidationResult, check)
from decflow.data.validation.suite import ALLOWED_KINDS, META_KEY, build_suite

__all__ = ["ALLOWED_KINDS", "BatchValidation", "DataValidationError", "Duplicates",
           "ExpectationResult", "META_KEY", "ValidationResult", "build_suite", "check",
           "find_duplicates", "merge_batches", "merge_duplicates", "suite_specs",
           "validate_batch", "validate_frame"]
