"""The method: the feature encoder, the autoencoder, pretraining, centroid initialisation, DEC
fine-tuning and the estimator in front of them, and how rows are scored with a fitted model.
Pure torch/numpy/scikit-learn: no storage, no MLflow, no Dask."""
