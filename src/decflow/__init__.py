"""decflow: nightly re-clustering of a growing table with Deep Embedded Clustering."""

__version__ = "0.1.0"

__all__ = ["DeepEmbeddedClustering", "DegenerateClusterWarning", "__version__"]


def __getattr__(name: str):
    """The estimator and its warning load on first use: importing decflow (the CLI's start, a
    validation-only Dask worker) does not pay for torch."""
    if name == "DeepEmbeddedClustering":
        from decflow.model.estimator import DeepEmbeddedClustering
        return DeepEmbeddedClustering
    if name == "DegenerateClusterWarning":
        from decflow.model.degenerate import DegenerateClusterWarning
        return DegenerateClusterWarning
    raise AttributeError(f"module 'decflow' has no attribute {name!r}")
