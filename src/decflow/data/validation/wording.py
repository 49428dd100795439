"""Results in words: counts of one batch per expectation, and the message, sample rows and
Markdown a user reads."""

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
import numpy as np
import pandas as pd
from decflow.config import ValidationConfig
from decflow.data.validation.columns import helper_column
from decflow.data.validation.results import ExpectationResult
from decflow.data.validation.suite import META_KEY, KIND_WORDS
if TYPE_CHECKING:
    pass


@dataclass
class Partial:
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

    def add(self, other: "Partial", size: int) -> "Partial":
        return Partial(
            success=self.success and other.success,
            unexpected=self.unexpected + other.unexpected,
            elements=self.elements + other.elements,
            values=dedupe(self.values + other.values)[:64],
            sample=(self.sample + other.sample)[:size],
            partitions=dedupe(self.partitions + other.partitions),
            error=self.error or other.error,
            observed=self.observed if not self.success or other.success else other.observed,
            has_count=self.has_count or other.has_count,
            skipped=max(self.skipped, other.skipped),
            dtype=", ".join(dedupe([d for d in (self.dtype, other.dtype) if d])))


@dataclass
class Context:
    """What a batch's result descriptions need besides the GX result."""

    frame: pd.DataFrame  # what GX validates (helper columns, vector stand-ins)
    data: pd.DataFrame  # the caller's frame with a RangeIndex
    id_column: str
    validation: ValidationConfig
    n_rows: int
    partition: str | None = None
    first_row: int = 0


def expectation_spec(expectation) -> dict:
    conf = expectation.configuration
    tag = (conf.meta or {}).get(META_KEY) or {}
    return {"type": conf.type, "kwargs": conf.kwargs, "check": tag.get("check", "user"),
            "column": tag.get("column", conf.kwargs.get("column")), "meta": tag}


def partial_result(spec: dict, r, ctx: Context) -> Partial:
    """One GX ExpectationValidationResult on a batch, as counts and a sample of offending rows."""
    where = [ctx.partition] if ctx.partition else []
    if r is None:  # GX dropped the expectation (it logs invalid configurations and moves on)
        return Partial(success=False, error="not evaluated by GX", partitions=where)
    res = r.result or {}
    error = _exception_message(r.exception_info)
    if error:
        return Partial(success=False, error=f"could not be evaluated: {error}", partitions=where)
    col, check, tag = spec["column"], spec["check"], spec["meta"]
    size = ctx.validation.sample_size
    p = Partial(success=bool(r.success), unexpected=res.get("unexpected_count") or 0,
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
                               values=ctx.frame[helper_column(col, "length")])
    elif check == "elements":
        p.sample = _row_sample(ctx, res, col, size, key="non_finite_elements",
                               values=ctx.frame[helper_column(col, "nonfinite")])
    elif check == "user":
        p.has_count = "unexpected_count" in res
        p.sample = [jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:size]]
        p.observed = jsonable(res["observed_value"]) if "observed_value" in res else None
    if r.success:
        p.sample = []
    return p


def describe(spec: dict, p: Partial, n_rows: int, validation: ValidationConfig,
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
            details = f"all values are {KIND_WORDS[tag['kind']]} (dtype {p.dtype})"
        else:
            details = (f"expected {KIND_WORDS[tag['kind']]}, found {', '.join(p.values)} in "
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


def _row_sample(ctx: Context, res: dict, col: str, size: int, *, value: bool = True,
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
        row = {ctx.id_column: jsonable(ident)} if has_id and not _is_null(ident) \
            else {"row": ctx.first_row + pos}
        if ctx.partition:
            row = {"partition": ctx.partition, **row}
        if value:
            row[key] = jsonable(src.iloc[pos])
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


def dedupe(values: list) -> list:
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


def jsonable(v: Any) -> Any:
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
        items = [jsonable(x) for x in list(v)[:8]]
        return items + ["..."] if len(v) > 8 else items
    text = v if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _fmt(x, open_end: str) -> str:
    return open_end if x is None else f"{x:g}"
