"""Models-from-code entry for a Vertex-tuned chain: QAChain(VertexGeminiProvider(tuned endpoint), pinned prompt).

Building the provider needs no credentials; the first question does (Application Default Credentials).
"""

import mlflow

# predict comes from QAChainModel: questions in, answers out, input and backend errors as MlflowException
from prompts.chain import QAChainModel


class VertexChainModel(QAChainModel):
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


mlflow.models.set_model(VertexChainModel())
