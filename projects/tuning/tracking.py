"""What every tuning run records, and how it ends when interrupted.

One run per tuning: params (backend, base model, hyperparameters, dataset digest and URIs, prompt version), the
datasets as MLflow inputs, metric series in batches, duration. SIGTERM is turned into KeyboardInterrupt so that
Ctrl-C and `kill` both end the run as KILLED (with the reason) before anything is registered.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from projects.tuning.common import TuningData
from llmops.secrets import mask_text, mask_urls

FAILURE_TAG = "llmops.failure_reason"
_BATCH = 1000  # MLflow's log_batch limit on metrics per call


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, like KeyboardInterrupt on SIGINT."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def _raise(signum: int, _frame: Any) -> None:
        raise Interrupted(f"received signal {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def tuning_run(run_name: str) -> Iterator[Any]:
    """Start (or attach to, under `mlflow run`) the tuning run; end it FINISHED, FAILED or KILLED with a reason."""
    import mlflow

    started = time.monotonic()
    with sigterm_as_interrupt():
        run = mlflow.start_run(run_name=run_name)
        try:
            yield run
        except KeyboardInterrupt as exc:
            _end(run.info.run_id, "KILLED", f"interrupted: {exc or 'SIGINT'}", started)
            raise
        except BaseException as exc:
            _end(run.info.run_id, "FAILED", f"{type(exc).__name__}: {exc}", started)
            raise
        _end(run.info.run_id, "FINISHED", None, started)


def _end(run_id: str, status: str, reason: str | None, started: float) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    writes = [lambda: client.log_metric(run_id, "duration_s", time.monotonic() - started)]
    if reason:  # the reason first: it is what a person looks for on a failed run
        writes.insert(0, lambda: client.set_tag(run_id, FAILURE_TAG, reason[:5000]))
    try:
        for write in writes:
            # A signal can land inside a store call; each write gets its own attempt (and one retry) so one
            # interrupted write does not cost the others.
            for attempt in (1, 2):
                try:
                    write()
                    break
                except Exception:
                    if attempt == 2:
                        logging.getLogger(__name__).warning("could not record run %s's outcome", run_id,
                                                            exc_info=True)
    finally:
        mlflow.end_run(status)


def log_tuning_inputs(backend: str, base_model: str, hyperparams: Mapping[str, Any], data: TuningData,
                      seed: int | None = None) -> None:
    """Params, tags and dataset inputs common to every backend (before training, so a failed run shows them)."""
    import mlflow

    from llmops.tracking import present

    # `tuning.*` / `hp.*` hold resolved values; `mlflow run` has already logged the raw -P values (blank means
    # "from the settings") under the bare entry-point names, and MLflow refuses to change a logged param.
    params = {
        "tuning.backend": backend, "tuning.base_model": base_model, "train_uri": data.train_uri,
        "eval_uri": data.eval_uri, **data.identity.as_params(), "prompt_name": data.prompt_name,
        "prompt_version": data.prompt_version, "instruction_hash": data.instruction_hash,
        "train_examples": len(data.train), "fit_examples": len(data.fit),
        "validation_examples": len(data.validation), "tuning.validation_percent": data.validation_percent,
        "eval_examples": len(data.eval), **{f"hp.{k}": v for k, v in hyperparams.items()},
    }
    if seed is not None:
        params["tuning.seed"] = seed
    mlflow.log_params(mask_urls(present(params)))
    mlflow.set_tags(mask_urls({"llmops.step": "tune", "llmops.tuning_backend": backend, **data.identity.as_tags(),
                               "llmops.eval_uri": data.eval_uri, "llmops.train_uri": data.train_uri}))
    log_dataset_inputs(data)


def record_spec(spec: Any) -> None:
    """End of every tuning run: what it produced, as data (a tag for quick reads, an artifact to keep)."""
    import mlflow

    from llmops.provider_spec import SPEC_ARTIFACT, SPEC_TAG

    text = mask_text(spec.to_json())  # a spec holds no secret; a URL's user-info is masked all the same
    mlflow.log_text(text, SPEC_ARTIFACT)
    mlflow.set_tags({SPEC_TAG: text, "llmops.provider_kind": spec.kind})


def log_grounding(data: TuningData) -> str:
    """The grounding index of a generative chain, fitted on train (the sources answers may cite); its URI."""
    import tempfile
    from pathlib import Path

    import mlflow

    from prompts.grounding import GroundingIndex

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(GroundingIndex.fit(data.train).save(Path(tmp) / "grounding")), "grounding")
    return f"runs:/{mlflow.active_run().info.run_id}/grounding"


def log_dataset_inputs(data: TuningData) -> None:
    """The splits as MLflow dataset inputs (digest = the dataset version), shown on the run page."""
    import warnings

    import mlflow
    import mlflow.data
    import pandas as pd

    from llmops.tracking import storage_uri

    for split, rows, uri in (("train", data.train, data.train_uri), ("eval", data.eval, data.eval_uri)):
        frame = pd.DataFrame(rows)[["id", "input_text", "output_text"]] if "input_text" in rows[0] else \
            pd.DataFrame(rows)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(frame, source=storage_uri(uri), name=f"so-qa-{split}",
                                              digest=data.digest)
        mlflow.log_input(dataset, context="training" if split == "train" else "evaluation")


def log_series(series: Mapping[str, Sequence[tuple[int, float]]], run_id: str | None = None) -> None:
    """Log metric histories (name -> [(step, value)]) with log_batch, 1000 values per call."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    run_id = run_id or mlflow.active_run().info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, int(step)) for name, points in series.items() for step, value in points]
    client = MlflowClient()
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _BATCH])
