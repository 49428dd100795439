"""Scoring rows with a fitted model: the one function every path that labels rows calls (the
partition engine, the logged pyfunc, the promotion comparison), so all give identical labels."""

import numpy as np
import pandas as pd


def score_frame(encoder, estimator, df: pd.DataFrame) -> pd.DataFrame:
    """Score rows with a fitted feature encoder and DEC estimator.

    Used by the logged pyfunc and by the flows, so both give identical labels.

    Args:
        encoder: fitted ``decflow.model.features.FeatureEncoder``.
        estimator: fitted ``decflow.DeepEmbeddedClustering``.
        df: (n rows) with the source feature columns; other columns are ignored.

    Returns:
        DataFrame (n rows, ``df``'s index) with ``cluster_id`` int32, ``confidence`` float32
        (max_j q_ij) and ``distance`` float32 (to the assigned centroid in embedding space).
    """
    if len(df) == 0:
        ids = np.empty(0, np.int32)
        conf = dist = np.empty(0, np.float32)
    else:
        ids, conf, dist = estimator.score_samples(encoder.transform(df))
    return pd.DataFrame({"cluster_id": np.asarray(ids, dtype=np.int32),
                         "confidence": np.asarray(conf, dtype=np.float32),
                         "distance": np.asarray(dist, dtype=np.float32)}, index=df.index)
