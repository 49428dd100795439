"""decflow: nightly re-clustering of a growing table with Deep Embedded Clustering."""

__version__ = "0.1.0"

from decflow.model.degenerate import DegenerateClusterWarning  # noqa: E402
from decflow.model.estimator import DeepEmbeddedClustering  # noqa: E402

__all__ = ["DeepEmbeddedClustering", "DegenerateClusterWarning", "__version__"]
