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


FAST = dict(n_components=4, hidden=(32, 32), pretrain_epochs=15, max_iter=60, n_init=2,
            batch_size=64)
