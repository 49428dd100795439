"""Scoring rows with a fitted model: the one function every path that labels rows calls (the
partition engine, the logged pyfunc, the promotion comparison), so all give identical labels."""

import time

import numpy as np
import pandas as pd


def score_frame(encoder, estimator, df: pd.DataFrame, *,
                steps: dict[str, float] | None = None) -> pd.DataFrame:
    """Score rows with a fitted feature encoder and DEC estimator.

    Used by the logged pyfunc and by the flows, so both give identical labels.

    Args:
        encoder: fitted ``decflow.model.features.FeatureEncoder``.
        estimator: fitted ``decflow.DeepEmbeddedClustering``.
        df: (n rows) with the source feature columns; other columns are ignored.
        steps: seconds spent encoding the features and in the model (``assign``: the forward
            pass and the soft assignment) are added to its "features" and "model".

    Returns:
        DataFrame (n rows, ``df``'s index) with ``cluster_id`` int32, ``confidence`` float32
        (max_j q_ij) and ``distance`` float32 (to the assigned centroid in embedding space).
    """
    if len(df) == 0:
        ids = np.empty(0, np.int32)
        conf = dist = np.empty(0, np.float32)
    else:
        t0 = time.perf_counter()
        X = encoder.transform(df)
        t1 = time.perf_counter()
        ids, conf, dist = estimator.assign(X)
        if steps is not None:
            steps["features"] = steps.get("features", 0.0) + t1 - t0
            steps["model"] = steps.get("model", 0.0) + time.perf_counter() - t1
    return pd.DataFrame({"cluster_id": np.asarray(ids, dtype=np.int32),
                         "confidence": np.asarray(conf, dtype=np.float32),
                         "distance": np.asarray(dist, dtype=np.float32)}, index=df.index)


def as_model_input(encoder, df: pd.DataFrame) -> pd.DataFrame:
    """The encoder's input columns of ``df``, numeric ones float64, as the pyfunc signature wants.

    MLflow's schema check refuses int64 -> float64 ("can not safely convert") and pandas turns
    an integer column with missing values into float64, so numeric features are declared
    double and passed as float64. Categorical columns keep their dtype: the encoder compares
    their ``str`` values, and 1 -> 1.0 would change them.
    """
    schema = encoder.schema()
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns: {missing} "
                         f"(the frame has {list(map(str, df.columns))[:20]})")
    numeric = [c for c, spec in schema.items() if spec["kind"] == "numeric"]
    return df[list(schema)].astype({c: "float64" for c in numeric})
