"""Fakes of the two SDK clients vertex tuning uses, with their real method signatures and return types.

`FakeGenaiClient.tunings` implements `tune(*, base_model, training_dataset, config)`, `get(*, name, config)` and
`cancel(*, name, config)` and returns real `google.genai.types.TuningJob` objects whose `JobState` follows a
script; `.models.generate_content` answers as the tuned endpoint; `FakeStorageClient` implements
`bucket(name).exists()` and `.blob(path).upload_from_string(...)`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from google.genai import types

JOB_NAME = "projects/demo-project/locations/us-central1/tuningJobs/4242"
ENDPOINT = "projects/demo-project/locations/us-central1/endpoints/777"
TUNED_MODEL = "projects/demo-project/locations/us-central1/models/888@1"
S = types.JobState
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def job(state: types.JobState, **fields: Any) -> types.TuningJob:
    return types.TuningJob(name=JOB_NAME, state=state, base_model="gemini-2.5-flash", create_time=T0, **fields)


def running(steps: int, epochs: int) -> types.TuningJob:
    return job(S.JOB_STATE_RUNNING, start_time=T0,
               tuning_job_metadata=types.TuningJobMetadata(completed_step_count=steps, completed_epoch_count=epochs))


def succeeded(billable_tokens: int = 120_000) -> types.TuningJob:
    return job(
        S.JOB_STATE_SUCCEEDED, start_time=T0, end_time=T0 + dt.timedelta(minutes=42),
        tuned_model=types.TunedModel(model=TUNED_MODEL, endpoint=ENDPOINT, checkpoints=[
            types.TunedModelCheckpoint(checkpoint_id="1", epoch=1, step=10, endpoint=ENDPOINT),
            types.TunedModelCheckpoint(checkpoint_id="2", epoch=2, step=20, endpoint=ENDPOINT)]),
        tuning_data_stats=types.TuningDataStats(supervised_tuning_data_stats=types.SupervisedTuningDataStats(
            tuning_dataset_example_count=12, total_billable_token_count=billable_tokens, tuning_step_count=20)),
        tuning_job_metadata=types.TuningJobMetadata(completed_step_count=20, completed_epoch_count=2),
        experiment="projects/demo-project/locations/us-central1/metadataStores/default/contexts/exp-1",
    )


def ended(state: types.JobState, message: str) -> types.TuningJob:
    return job(state, start_time=T0, end_time=T0 + dt.timedelta(minutes=5),
               error=types.GoogleRpcStatus(code=3, message=message))


class FakeTunings:
    def __init__(self, script: list[Any], cancel_marker: Path | None = None) -> None:
        self.script = list(script)  # what successive get() calls return (an exception instance is raised)
        self.tune_calls: list[dict[str, Any]] = []
        self.get_calls = 0
        self.cancelled: list[str] = []
        self.cancel_marker = cancel_marker

    def tune(self, *, base_model: str, training_dataset: types.TuningDataset,
             config: types.CreateTuningJobConfig | None = None) -> types.TuningJob:
        assert isinstance(training_dataset, types.TuningDataset)
        assert isinstance(config, types.CreateTuningJobConfig)
        self.tune_calls.append({"base_model": base_model, "training_dataset": training_dataset, "config": config})
        return job(S.JOB_STATE_QUEUED)

    def get(self, *, name: str, config: Any = None) -> types.TuningJob:
        assert name == JOB_NAME, name
        self.get_calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self, *, name: str, config: Any = None) -> types.CancelTuningJobResponse:
        self.cancelled.append(name)
        if self.cancel_marker is not None:
            self.cancel_marker.write_text(name)
        return types.CancelTuningJobResponse()


class FakeModels:
    """`generate_content(*, model, contents, config)` as the tuned endpoint would answer: it "learned" the
    training file that was uploaded to the storage fake (the answer of the training prompt sharing most words with
    the request), so a wrong upload or a wrong endpoint shows in the answers. Returns real response types."""

    def __init__(self, storage: FakeStorageClient | None) -> None:
        self.storage = storage
        self.calls: list[str] = []

    def _memory(self) -> list[tuple[set[str], str]]:
        pairs = []
        for bucket in (self.storage.buckets.values() if self.storage else []):
            for name, (text, _type) in bucket.objects.items():
                if name.endswith("/train.jsonl"):
                    for line in text.splitlines():
                        contents = json.loads(line)["contents"]
                        prompt, answer = contents[0]["parts"][0]["text"], contents[-1]["parts"][0]["text"]
                        pairs.append((set(prompt.lower().split()), answer))
        return pairs

    def generate_content(self, *, model: str, contents: Any, config: Any = None) -> types.GenerateContentResponse:
        assert model == ENDPOINT, model
        asked = contents[-1].parts[0].text
        self.calls.append(asked)
        words = set(asked.lower().split())
        memory = self._memory()
        answer = max(memory, key=lambda pair: len(pair[0] & words))[1] if memory else "I was not tuned."
        return types.GenerateContentResponse(candidates=[types.Candidate(
            content=types.Content(role="model", parts=[types.Part(text=answer)]),
            finish_reason=types.FinishReason.STOP)], usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=len(asked.split()), candidates_token_count=len(answer.split())))


class FakeGenaiClient:
    def __init__(self, script: list[Any], cancel_marker: Path | None = None,
                 storage: FakeStorageClient | None = None) -> None:
        self.tunings = FakeTunings(script, cancel_marker)
        self.models = FakeModels(storage)


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket, self.name = bucket, name

    def upload_from_string(self, data: str | bytes, content_type: str = "text/plain", **_: Any) -> None:
        self.bucket.objects[self.name] = (data.decode() if isinstance(data, bytes) else data, content_type)


class FakeBucket:
    def __init__(self, name: str, exists: bool) -> None:
        self.name, self._exists = name, exists
        self.objects: dict[str, tuple[str, str]] = {}

    def exists(self, client: Any = None, **_: Any) -> bool:
        return self._exists

    def blob(self, blob_name: str, **_: Any) -> FakeBlob:
        return FakeBlob(self, blob_name)


class FakeStorageClient:
    def __init__(self, existing: tuple[str, ...] = ("llmops-tuning",)) -> None:
        self.buckets = {name: FakeBucket(name, True) for name in existing}

    def bucket(self, bucket_name: str, user_project: str | None = None) -> FakeBucket:
        return self.buckets.setdefault(bucket_name, FakeBucket(bucket_name, False))
