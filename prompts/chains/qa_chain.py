"""Models-from-code entry: MLflow runs this file at log and load time to get the model object."""

import mlflow

from prompts.chain import QAChainModel

mlflow.models.set_model(QAChainModel())
