"""Models-from-code entry for an hf-tuned chain: QAChain(HFBackend(base + LoRA adapter), the pinned prompt)."""

import mlflow

# predict comes from QAChainModel: questions in, answers out, input and backend errors as MlflowException
from prompts.chain import QAChainModel


class HFChainModel(QAChainModel):
    """Loads base + adapter once per process; the base comes bundled or from `base_model_path` in the config."""

    def load_context(self, context):
        from backends.hf import HFBackend
        from prompts.chain import QAChain
        from prompts.registry import PinnedPrompt

        config = context.model_config or {}
        prompt = PinnedPrompt.from_config(config)
        base = context.artifacts.get("base_model") or config["base_model_path"]
        backend = HFBackend.load(base, context.artifacts["adapter"], int(config.get("max_new_tokens", 256)))
        self.chain = QAChain(backend, prompt, model_name=config.get("registered_model_name"),
                             chain_name=config.get("chain"), provider="hf")


mlflow.models.set_model(HFChainModel())
