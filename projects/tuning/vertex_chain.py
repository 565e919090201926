"""Models-from-code entry for a Vertex-tuned chain: QAChain(VertexGeminiProvider(tuned endpoint), pinned prompt).

Building the provider needs no credentials; the first question does (Application Default Credentials).
"""

import mlflow
import mlflow.pyfunc


class VertexChainModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from backends.vertex import VertexGeminiProvider
        from prompts.chain import QAChain
        from prompts.registry import PinnedPrompt

        config = context.model_config or {}
        prompt = PinnedPrompt.from_config(config)
        backend = VertexGeminiProvider(model=config["endpoint"], project=config.get("project") or None,
                                       location=config.get("location") or None,
                                       params=prompt.model_parameters)
        self.chain = QAChain(backend, prompt, model_name=config.get("registered_model_name"),
                             chain_name=config.get("chain"), provider="vertex", model_id=config["endpoint"])

    def predict(self, context, model_input, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from llmops.errors import InputError
        from prompts.chain import questions_from_input

        try:
            return self.chain.answer_many(questions_from_input(model_input))
        except InputError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


mlflow.models.set_model(VertexChainModel())
