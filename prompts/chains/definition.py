"""The QA chain's definition as a LangChain LCEL runnable: the order of its stages, in one place.

Each stage is a method of `prompts.chain.QAChain` that takes and returns a state dict and opens its own MLflow
trace span; `prompts/chains/qa_chain.py` is the models-from-code file that MLflow runs to build the served model.
"""

from __future__ import annotations

from typing import Any

STAGES = ("preprocess", "grounding", "prompt", "llm", "postprocess")


def build_qa_runnable(chain: Any):
    """`{"raw": question}` -> ChainResponse dict, as `preprocess | grounding | prompt | llm | postprocess`."""
    from langchain_core.runnables import RunnableLambda

    steps = [RunnableLambda(getattr(chain, f"_{stage}_stage"), name=stage) for stage in STAGES]
    runnable = steps[0]
    for step in steps[1:]:
        runnable = runnable | step
    return runnable.with_config(run_name=getattr(chain, "chain_name", "qa-chain"))
