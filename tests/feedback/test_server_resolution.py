"""What the model server mounts: `server_router`'s flush on an unknown id is coalesced (a flood of unknown ids
makes at most one flush per gap) and never skipped for a caller (each returns only after a flush that started
after it arrived, so its own answer's record is on the store). The live path - feedback on an answer the real
server gave a moment ago - is tested in tests/serving/test_server.py and tests/feedback/test_loop.py."""

from __future__ import annotations

import threading
import time

from feedback.http import CoalescedFlush


def test_a_flood_of_misses_makes_few_flushes_and_every_caller_is_covered() -> None:
    starts: list[float] = []

    def flush() -> None:
        starts.append(time.monotonic())
        time.sleep(0.02)

    coalesced = CoalescedFlush(flush, min_gap_s=0.2)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def miss() -> None:
        arrived = time.monotonic()
        coalesced()
        with lock:
            spans.append((arrived, time.monotonic()))

    threads = [threading.Thread(target=miss) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(starts) <= 2 and coalesced.calls == len(starts)  # 20 misses, not 20 parts
    for arrived, returned in spans:  # each caller waited for a flush that began after it arrived
        assert any(arrived <= start <= returned for start in starts), (arrived, returned, starts)
    if len(starts) == 2:
        assert starts[1] - starts[0] >= 0.2
    later = time.monotonic()
    coalesced()  # a miss after the gap flushes again
    assert len(starts) in (2, 3) and starts[-1] >= later


def test_an_index_given_to_the_service_is_the_one_it_uses_even_while_empty(tmp_path) -> None:
    from feedback.capture import FeedbackService
    from feedback.resolve import InferenceLog
    from llmops.settings import load_settings

    misses: list[str] = []
    index = InferenceLog(str(tmp_path / "log"), on_miss=lambda: misses.append("flush"))
    assert len(index) == 0  # falsy: `index or default` would silently replace it
    service = FeedbackService(load_settings(), inference_log=index)
    assert service.log is index and service.log.find("unknown") is None and misses == ["flush"]
