"""The logged decflow model, as an MLflow "models from code" pyfunc.

MLflow executes this file when it loads the model (``mlflow.pyfunc.load_model``), and imports
the decflow package stored next to it (``code/``): whoever can write to the artifact store can
make that code do anything for whoever loads the model this way.
``decflow.registry.versions.load_scorer`` checks every file against the digests recorded at
registration first; ``decflow.registry.versions.load_model_safely`` runs none of this code. It
is not imported by the rest of the library, because the last line registers the model with MLflow.
Nothing is pickled: the feature encoder is a JSON file and the network and centroids are one
safetensors file, both passed as artifacts by ``decflow.registry.packaging.log_model``.
"""

import mlflow
import pandas as pd

from decflow.model.estimator import DeepEmbeddedClustering
from decflow.model.features import FeatureEncoder
from decflow.model.scoring import score_frame


class DecflowModel(mlflow.pyfunc.PythonModel):
    """Source feature columns in; ``cluster_id``, ``confidence``, ``distance`` out."""

    def load_context(self, context):
        self.encoder = FeatureEncoder.load(context.artifacts["encoder"])
        self.estimator = DeepEmbeddedClustering.load(context.artifacts["estimator"], device="cpu")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return score_frame(self.encoder, self.estimator, model_input)


mlflow.models.set_model(DecflowModel())
