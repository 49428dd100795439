"""Great Expectations plumbing: the ephemeral context, created once, and running a list of
expectations on one frame (GX's pandas engine validates one frame at a time)."""

import contextlib
import functools
import threading
from typing import TYPE_CHECKING

import pandas as pd
from decflow.data.validation.suite import ORDER_KEY
if TYPE_CHECKING:
    pass


_LOCK = threading.Lock()  # GX's pandas engine keeps per-datasource state; validate one at a time


_BATCH_DEFINITION = None


def _batch_definition():
    """The cached whole-dataframe batch definition of an ephemeral context (call under _LOCK)."""
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (DataContextConfig,
                                                                InMemoryStoreBackendDefaults,
                                                                ProgressBarsConfig)

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


def warm_context() -> None:
    """Build the context now (a Dask worker's warm-up), not in the first batch's validation."""
    with _LOCK:
        _batch_definition()


def run_expectations(frame: pd.DataFrame, expectations: list) -> list:
    """GX validation results for ``expectations`` on ``frame``, in the order given.

    GX first reports counts (``BASIC`` results: success, element and unexpected counts,
    observed values); only the expectations that did not pass are evaluated again with
    ``COMPLETE`` results, whose row positions (``unexpected_index_list``) the samples of
    offending rows are drawn from. A passing expectation's counts are the same in both, and
    on clean data nothing is evaluated twice. Counting only costs less: 0.17 against 0.25 s a
    call on 100,000 rows of the scale benchmark's 29 expectations (one call per chunk).
    """
    results = _validate(frame, expectations, "BASIC")
    again = [i for i, r in enumerate(results) if r is not None and not r.success]
    if again:
        for i, r in zip(again, _validate(frame, [expectations[i] for i in again], "COMPLETE")):
            results[i] = r
    return results


def _validate(frame: pd.DataFrame, expectations: list, result_format: str) -> list:
    if not expectations:
        return []
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    tagged = []
    for i, e in enumerate(expectations):
        conf = e.configuration.to_json_dict()
        conf.pop("id", None)
        conf["meta"] = {**(conf.get("meta") or {}), ORDER_KEY: i}
        tagged.append(ExpectationConfiguration(**conf))
    suite = gx.ExpectationSuite(name="decflow_run", expectations=tagged)
    with _LOCK, configurations_kept():
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        outcome = batch.validate(suite, result_format=result_format)
    ordered: list = [None] * len(expectations)
    for r in outcome.results:  # GX does not keep suite order (errored expectations come first)
        ordered[r.expectation_config.meta[ORDER_KEY]] = r
    return ordered


_KEPT = threading.local()  # .configurations: {id(expectation): (expectation, its configuration)}


@contextlib.contextmanager
def configurations_kept():
    """While a validation runs in this thread, each expectation builds its configuration once.

    GX's ``Expectation.configuration`` is a property that builds a new
    ``ExpectationConfiguration`` from the expectation's fields (a pydantic ``dict()``, a
    class-name conversion) on every access, and one validation reads it about 50 times per
    expectation while building its metric graph. That was over a third of a call's cost that
    does not depend on the rows: measured on the scale benchmark's table (38 expectations),
    0.24 s of CPU a call on 25,000 rows before, 0.15 s with this; 0.42 and 0.33 s on 200,000
    rows, the chunk of a large night. GX reads it and never changes it during a validation, and the
    expectations are the validation's own (built from the suite's configurations), so the
    first one built is the one every later read would have built. Other threads, and this one
    outside the block, get GX's property unchanged.
    """
    _keep_configurations()
    outer = getattr(_KEPT, "configurations", None)
    _KEPT.configurations = {} if outer is None else outer
    try:
        yield
    finally:
        _KEPT.configurations = outer


@functools.cache
def _keep_configurations() -> None:
    """Put the property that ``configurations_kept`` consults on GX's ``Expectation`` (once)."""
    from great_expectations.expectations.expectation import Expectation

    Expectation.configuration = kept_property(Expectation.configuration.fget)


def kept_property(build) -> property:
    """``Expectation.configuration``: ``build(self)``, or the one kept for ``self`` inside
    ``configurations_kept`` in this thread."""

    def configuration(self):
        kept = getattr(_KEPT, "configurations", None)
        if kept is None:
            return build(self)
        entry = kept.get(id(self))
        if entry is None:  # kept with a reference to ``self``: its id cannot be reused meanwhile
            entry = kept[id(self)] = (self, build(self))
        return entry[1]

    configuration.__doc__ = build.__doc__
    return property(configuration)
