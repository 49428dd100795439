import numpy as np
import pytest


@pytest.fixture(scope="session")
def blobs():
    """Four well-separated Gaussian blobs in 12-d, 60 rows each."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(4, 12))
    y = np.repeat(np.arange(4), 60)
    X = centers[y] + rng.normal(size=(len(y), 12))
    return X.astype(np.float32), y

