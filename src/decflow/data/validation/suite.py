"""The expectation suite a config describes (and the user's own suite appended)."""

import json
from pathlib import Path
import functools
import math
from typing import TYPE_CHECKING
from decflow.config import FeaturesConfig, SourceConfig, ValidationConfig
from decflow.data.validation.columns import feature_kinds, helper_column
if TYPE_CHECKING:
    import great_expectations as gx


META_KEY = "decflow"  # expectation meta: {"decflow": {"column": original column, "check": ...}}


ORDER_KEY = "decflow_order"  # added to run copies only, to put GX's results back in suite order


# Per-value kinds (see `_value_kind`) each feature kind accepts, and how messages describe them.
ALLOWED_KINDS = {
    "numeric": ["float", "int"],
    "categorical": ["bool", "int", "str"],
    "text": ["str"],
    "vector": ["list"],
}


KIND_WORDS = {
    "numeric": "numbers (int or float)",
    "categorical": "strings, integers or booleans",
    "text": "strings",
    "vector": "lists or arrays of floats",
}


_STRUCTURAL = ("row_count", "exists", "type")


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
    for col, kind in feature_kinds(features).items():
        exps += [
            gxe.ExpectColumnToExist(column=col, meta=meta(col, "exists", kind=kind)),
            gxe.ExpectColumnValuesToBeInSet(column=helper_column(col, "type"),
                                            value_set=ALLOWED_KINDS[kind],
                                            meta=meta(col, "type", kind=kind)),
        ]
        if kind == "numeric":
            exps += [
                gxe.ExpectColumnValuesToNotBeNull(column=col,
                                                  meta=meta(col, "not_null", kind=kind)),
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
                gxe.ExpectColumnValuesToNotBeNull(column=col,
                                                  meta=meta(col, "not_null", kind=kind)),
                gxe.ExpectColumnValuesToBeInSet(column=helper_column(col, "length"), value_set=[n],
                                                meta=meta(col, "length", kind=kind, length=n)),
                gxe.ExpectColumnValuesToBeInSet(column=helper_column(col, "nonfinite"),
                                                value_set=[0],
                                                meta=meta(col, "elements", kind=kind)),
            ]
    if validation.suite_path:
        exps += _load_user_expectations(validation.suite_path)
    # The constructor keeps every expectation (add_expectation would drop "equalish" repeats).
    return gx.ExpectationSuite(name="decflow", expectations=exps)


def suite_expectations(source: SourceConfig, features: FeaturesConfig,
                       validation: ValidationConfig) -> list:
    """The suite's expectations, built once per process and config (batches share it)."""
    return _suite_cached(source.model_dump_json(), features.model_dump_json(),
                         validation.model_dump_json())


@functools.lru_cache(maxsize=8)
def _suite_cached(source: str, features: str, validation: str) -> list:
    return list(build_suite(SourceConfig.model_validate_json(source),
                            FeaturesConfig.model_validate_json(features),
                            ValidationConfig.model_validate_json(validation)).expectations)


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
