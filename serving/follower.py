"""Following the alias: poll the registry, load a new version beside the old, smoke it, swap; watch; roll back.

One background thread per server process:

1. Every `poll_interval_s` (or at once after `wake()`, e.g. `POST /admin/refresh` from a registry notification)
   it asks the registry where each slot's alias points.
2. A version other than the one served is prepared beside it (serving/loader.py: load, prompt consistency, smoke
   questions). Only then is the slot's reference swapped; requests in flight keep the version they started on.
   A version that fails is refused - never swapped in - and remembered while the alias points at it (it is tried
   again if the alias moves away and back), and the server says so in /metrics, its log and /version.
3. For `watch_window_s` after a champion swap the old version stays loaded. If the new one's error rate or p99
   crosses the thresholds (serving/watch.py), the slot swaps back at once and the alias is moved back through the
   registry (`registry.promote.Releaser.rollback`: a ledger row with the reason and the numbers). If the registry
   refuses (the server's identity lacks the right, the alias is outside the policy, someone moved it since), the
   swap back stays local, the bad version stays refused while the alias points at it, and that is reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from llmops.errors import AccessDeniedError, LlmopsError
from serving.loader import LoadedVersion, RefusedVersion, prepare, resolve_version
from serving.state import ServingState, Slot
from serving.watch import VersionWatch, judge

log = logging.getLogger("serving.follower")
WATCH_TICK_S = 0.5
MIN_WAKE_GAP_S = 1.0


class AliasFollower:
    def __init__(self, state: ServingState, smoke_questions: list[str],
                 releaser: Callable[[], Any] | None = None) -> None:
        self.state = state
        self.cfg = state.cfg
        self.smoke_questions = smoke_questions
        self._releaser_factory = releaser or self._default_releaser
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)
        self._client: Any = None
        self._first_done: float | None = None
        self.polls = 0

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self, first_poll: bool = True) -> AliasFollower:
        """Poll once here (the caller waits: a worker accepts no request before it tried to load), then follow in
        the background."""
        self.state.follower = self
        if first_poll:
            self.poll_once()
            self._first_done = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def wake(self) -> None:
        """Poll now (a registry notification said an alias moved)."""
        self._wake.set()

    def _run(self) -> None:
        last_poll = self._first_done if self._first_done is not None else -MIN_WAKE_GAP_S
        next_poll = last_poll + self.cfg.poll_interval_s if self._first_done is not None else 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            woken = self._wake.is_set() and now - last_poll >= MIN_WAKE_GAP_S  # a flood of wakes: one poll a second
            if now >= next_poll or woken:
                self._wake.clear()
                self.poll_once()
                last_poll = time.monotonic()
                next_poll = last_poll + self.cfg.poll_interval_s
            self.check_watches()
            watching = self.state.champion.watch is not None
            timeout = min(WATCH_TICK_S, max(0.0, next_poll - time.monotonic())) if watching else \
                max(0.0, next_poll - time.monotonic())
            if self._wake.is_set():  # woken too soon after a poll: wait out the gap, then poll
                time.sleep(min(timeout, max(0.0, last_poll + MIN_WAKE_GAP_S - time.monotonic())))
                continue
            self._wake.wait(timeout)

    # -- polling and swapping -------------------------------------------------------------------------------------
    def poll_once(self) -> None:
        self.polls += 1
        for slot in (self.state.champion, self.state.challenger):
            if slot is not None and not self._stop.is_set():
                try:
                    self.follow(slot)
                except Exception:  # noqa: BLE001 - the follower must survive anything and keep serving
                    log.exception("following %s failed", slot.ref.uri)

    def _registry(self) -> Any:
        from llmops.registry_client import registry_client

        if self._client is None:
            self._client = registry_client()
        return self._client

    def follow(self, slot: Slot) -> None:
        try:
            version = resolve_version(slot.ref, self._registry())
        except Exception as exc:  # noqa: BLE001 - registry down or alias deleted: keep serving, report
            slot.poll_error = " ".join(str(exc).split())[:300]
            slot.last_poll_at = time.time()
            log.warning("%s: cannot ask the registry (%s); still serving %s", slot.ref.uri, slot.poll_error,
                        slot.current.label if slot.current else "nothing")
            return
        slot.poll_error, slot.last_poll_at, slot.target = None, time.time(), version
        slot.refused = {v: why for v, why in slot.refused.items() if v == version}  # forget once the alias moved
        if slot.current is not None and slot.current.version == version:
            return
        if version in slot.refused:
            return
        if slot.previous is not None and slot.previous.version == version:  # moved back (by us or another replica)
            self.swap(slot, slot.previous, watch=False)
            return
        started = time.perf_counter()
        log.info("%s now points at v%s: preparing it beside %s", slot.ref.uri, version,
                 slot.current.label if slot.current else "nothing")
        try:
            loaded = prepare(slot.ref.name, version, slot.ref.alias, self.smoke_questions,
                             self.state.settings.registry.smoke_budget_ms, self._registry())
        except RefusedVersion as exc:
            self.refuse(slot, version, exc.stage, str(exc))
            return
        log.info("%s: v%s prepared in %.1f s (load %.1f s, smoke %s ms)", slot.ref.uri, version,
                 time.perf_counter() - started, loaded.load_s, [round(v) for v in loaded.smoke_ms])
        self.swap(slot, loaded, watch=slot.role == "champion" and slot.current is not None)

    def refuse(self, slot: Slot, version: str, stage: str, reason: str) -> None:
        why = {"version": version, "stage": stage, "reason": reason, "at": _now_iso()}
        slot.refused[version] = why
        slot.refusals.append(why)
        self.state.metrics.refused.labels(slot.role, version, stage).inc()
        log.error("%s: v%s refused (%s): %s; still serving %s", slot.ref.uri, version, stage, reason,
                  slot.current.label if slot.current else "nothing (not ready)")

    def swap(self, slot: Slot, loaded: LoadedVersion, watch: bool) -> None:
        previous = slot.current
        watch = watch and self.cfg.auto_rollback and self.cfg.watch_window_s > 0 and previous is not None \
            and slot.ref.alias is not None
        slot.previous = previous if watch else None
        slot.watch = VersionWatch(loaded.version, previous.version, window_s=self.cfg.watch_window_s) \
            if watch and previous is not None else None
        slot.current = loaded  # the swap: one reference assignment
        slot.swaps += 1
        slot.last_swap_at = time.time()
        metrics = self.state.metrics
        metrics.swaps.labels(slot.role, loaded.version).inc()
        metrics.set_serving(slot.role, loaded, previous)
        if slot.role == "champion":
            metrics.ready.set(1)
        log.warning("%s: now serving v%s (was %s)%s", slot.ref.uri, loaded.version,
                    f"v{previous.version}" if previous else "nothing",
                    f"; watching it for {self.cfg.watch_window_s:.0f} s" if slot.watch else "")

    # -- the watch and auto-rollback -----------------------------------------------------------------------------
    def check_watches(self) -> None:
        slot = self.state.champion
        watch = slot.watch
        if watch is None or slot.current is None or slot.current.version != watch.version:
            return
        latencies, errors = watch.snapshot()
        verdict = judge(latencies, errors, min_requests=self.cfg.watch_min_requests,
                        max_error_rate=self.cfg.rollback_max_error_rate, max_p99_ms=self.cfg.rollback_max_p99_ms)
        if verdict.rollback:
            self.roll_back(slot, verdict, time.monotonic() - watch.started)
        elif watch.over:
            log.info("%s: v%s passed its watch (%s)", slot.ref.uri, watch.version, verdict.reason)
            slot.watch, slot.previous = None, None

    def roll_back(self, slot: Slot, verdict: Any, elapsed_s: float) -> None:
        bad, good = slot.current, slot.previous
        if bad is None or good is None:
            return
        slot.current, slot.watch, slot.previous = good, None, None  # local swap back first: stop the harm now
        self.state.metrics.set_serving(slot.role, good, bad)
        reason = (f"auto-rollback by llmops serve ({self.state.replica}): v{bad.version} {verdict.reason} within "
                  f"{elapsed_s:.0f} s of the swap from v{good.version} (thresholds: error rate "
                  f"{self.cfg.rollback_max_error_rate:.2f}, p99 {self.cfg.rollback_max_p99_ms:.0f} ms)")
        slot.refused[bad.version] = {"version": bad.version, "stage": "rolled back", "reason": reason,
                                     "at": _now_iso()}
        # reported at once (registry "moving"): /version never shows the swap back without its reason
        record = {"from_version": bad.version, "to_version": good.version, "reason": reason,
                  "numbers": verdict.numbers(), "registry": "moving", "detail": "moving the alias back",
                  "at": _now_iso()}
        slot.rollbacks.append(record)
        slot.refusals.append(slot.refused[bad.version])
        outcome, detail = self._move_alias_back(slot, good.version, reason)
        record.update(registry=outcome, detail=detail)
        self.state.metrics.rollbacks.labels(bad.version, good.version, outcome).inc()
        log.error("%s: rolled back v%s -> v%s: %s; registry: %s (%s)", slot.ref.uri, bad.version, good.version,
                  verdict.reason, outcome, detail)

    def _move_alias_back(self, slot: Slot, to_version: str, reason: str) -> tuple[str, str]:
        """('moved' | 'refused' | 'failed', detail): the alias moved back through the ledger, or why not."""
        try:
            releaser = self._releaser_factory()
            result = releaser.rollback(slot.ref.name, slot.ref.alias, to_version, reason)
        except AccessDeniedError as exc:
            return "refused", f"the registry refused this server's identity: {exc}; swapped back locally only"
        except LlmopsError as exc:
            return "refused", f"{exc}".splitlines()[0] + "; swapped back locally only"
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            return "failed", f"{type(exc).__name__}: {exc}".splitlines()[0] + "; swapped back locally only"
        move = getattr(result, "move", None)
        return "moved", f"ledger #{move.id}" if move is not None and move.id is not None else "moved"

    def _default_releaser(self) -> Any:
        from registry.promote import Releaser

        return Releaser(self.state.settings)


def _now_iso() -> str:
    from serving.state import iso

    return iso(time.time()) or ""
