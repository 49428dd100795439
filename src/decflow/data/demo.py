"""The embedded default: scikit-learn's bundled digits as a small date-partitioned source table."""

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from decflow.config import FeaturesConfig, PipelineConfig, SourceConfig, ValidationConfig
from decflow.data.partitioned import parse_date, write_partition

DEMO_DAYS = 3


def demo_config(home: str = ".decflow") -> PipelineConfig:
    """Config of the demo: digits pixels as a 64-length vector column, the digit as label."""
    return PipelineConfig(
        home=home,
        source=SourceConfig(uri=str(Path(home) / "demo" / "source"), id_column="id",
                            label_column="digit", window_days=DEMO_DAYS),
        features=FeaturesConfig(vector={"pixels": 64}),
        validation=ValidationConfig(min_rows=100),
    )


def write_demo_source(uri: str, run_date, n_days: int = DEMO_DAYS) -> list[dt.date]:
    """Write the 1,797 digits split over ``n_days`` consecutive dates ending at ``run_date``.

    Columns: ``id`` (int64), ``pixels`` (list<float32>, length 64), ``digit`` (int64, the truth).
    Rewriting is idempotent (each partition is replaced).

    Returns:
        The dates written, oldest first.
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    end = parse_date(run_date)
    days = [end - dt.timedelta(days=i) for i in range(n_days - 1, -1, -1)]
    order = np.random.default_rng(0).permutation(len(X))  # each day gets every digit
    for day, rows in zip(days, np.array_split(order, n_days)):
        rows = np.sort(rows)
        pixels = pa.FixedSizeListArray.from_arrays(
            pa.array(X[rows].astype(np.float32).ravel()), 64).cast(pa.list_(pa.float32()))
        table = pa.table({"id": pa.array(rows.astype(np.int64)), "pixels": pixels,
                          "digit": pa.array(y[rows].astype(np.int64))})
        write_partition(uri, "ds", day, table)
    return days
