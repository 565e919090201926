"""The one models-from-code file: MLflow runs it at log and load time to get the model object, whatever the
provider kind (the kind and its artifacts come from the model's config)."""

import mlflow

from registry.pyfunc_model import QAChainModel

mlflow.models.set_model(QAChainModel())
