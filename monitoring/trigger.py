"""The retuning trigger: an alarm (or a feedback count) runs the configured command with the window as the reason.

The command is an argv list from the rule file (no shell). Its `{placeholders}` are filled from the reason
(`reason_file`, `questions_file`, `kind`, `model_name`, `model_version`, `window_start`, `window_end`); the reason
is also on stdin as JSON and in `LLMOPS_MONITOR_REASON` (the reason file's path). The reason file and the window's
questions (already PII-redacted in the log) are written atomically before the command starts; a reason whose
command already succeeded is not run again, so a monitor run repeated on the same log does not retune twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops.errors import ConfigError
from llmops.fsutil import write_text_atomic
from monitoring.rules import TRIGGER_PLACEHOLDERS as PLACEHOLDERS
from monitoring.rules import AlarmRules


@dataclass(frozen=True)
class Reason:
    kind: str                        # drift | skew | feedback
    model_name: str
    model_version: str
    window_start: str = ""
    window_end: str = ""
    features: list[str] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    log: str = ""
    monitor_run_id: str = ""
    feedback_count: int | None = None
    questions: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        basis = f"{self.kind}|{self.model_name}|{self.model_version}|{self.window_start}|{self.window_end}"
        if self.kind == "feedback":
            basis += f"|{self.feedback_count}"
        return hashlib.sha256(basis.encode()).hexdigest()[:16]


@dataclass
class TriggerOutcome:
    argv: list[str]
    reason_file: str
    ran: bool
    status: str                      # dry-run | ran | failed | already-ran | not-configured | disabled
    returncode: int | None = None
    detail: str = ""

    def line(self) -> str:
        shown = " ".join(self.argv) if self.argv else "(no command configured)"
        if self.status == "dry-run":
            return f"trigger (dry-run): would run {shown}  [reason {self.reason_file}]"
        if self.status == "ran":
            return f"trigger: ran {shown}: exit 0"
        if self.status == "already-ran":
            return f"trigger: {shown} already ran for this reason ({self.reason_file})"
        if self.status == "not-configured":
            return "trigger: no command configured in the rule file"
        if self.status == "disabled":
            return f"trigger: not run ({self.detail})"
        return f"trigger: {shown} FAILED ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_argv(command: list[str], values: dict[str, str]) -> list[str]:
    try:
        return [arg.format_map(values) for arg in command]
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"trigger command {command}: bad placeholder {exc} (known: {', '.join(PLACEHOLDERS)})") \
            from exc


def fire(reason: Reason, rules: AlarmRules, folder: Path, dry_run: bool = False) -> TriggerOutcome:
    """Run (or, dry, show) the rule's command for `reason`; never raises for the command's own failure."""
    trigger = rules.trigger
    folder = Path(folder)
    reason_file = folder / f"{reason.key}.json"
    questions_file = folder / f"{reason.key}.questions.jsonl"
    values = {"reason_file": str(reason_file), "questions_file": str(questions_file), "kind": reason.kind,
              "model_name": reason.model_name, "model_version": reason.model_version,
              "window_start": reason.window_start, "window_end": reason.window_end}
    if trigger.command is None:
        return TriggerOutcome([], str(reason_file), False, "not-configured")
    argv = render_argv(trigger.command, values)
    if reason.kind not in trigger.when:
        return TriggerOutcome(argv, str(reason_file), False, "disabled", detail=f"the rule runs it on "
                              f"{', '.join(trigger.when)}, not {reason.kind}")
    if dry_run or rules.mode != "enforced":
        why = "dry-run" if dry_run else f"rule mode {rules.mode}"
        return TriggerOutcome(argv, str(reason_file), False, "dry-run", detail=why)
    done = _previous(reason_file)
    if done is not None and done.get("returncode") == 0:
        return TriggerOutcome(argv, str(reason_file), False, "already-ran")
    payload = {**asdict(reason), "questions": len(reason.questions), "questions_file": str(questions_file),
               "argv": argv}
    write_text_atomic(questions_file, "".join(json.dumps({"question": q}) + "\n" for q in reason.questions))
    write_text_atomic(reason_file, json.dumps(payload, indent=2))
    env = {**os.environ, "LLMOPS_MONITOR_REASON": str(reason_file)}
    try:
        proc = subprocess.run(argv, input=json.dumps(payload), capture_output=True, text=True, check=False,
                              timeout=trigger.timeout_s, env=env)
    except FileNotFoundError as exc:
        outcome = TriggerOutcome(argv, str(reason_file), False, "failed", detail=f"{exc.filename}: not found")
    except subprocess.TimeoutExpired:
        outcome = TriggerOutcome(argv, str(reason_file), True, "failed", detail=f"no exit within {trigger.timeout_s:.0f} s")
    else:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        ok = proc.returncode == 0
        outcome = TriggerOutcome(argv, str(reason_file), True, "ran" if ok else "failed", proc.returncode,
                                 "" if ok else f"exit {proc.returncode}{': ' + tail if tail else ''}")
    write_text_atomic(reason_file, json.dumps({**payload, "returncode": outcome.returncode,
                                               "status": outcome.status}, indent=2))
    return outcome


def _previous(reason_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(reason_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def feedback_reason(model_name: str, model_version: str, count: int, rules: AlarmRules) -> Reason | None:
    """A feedback count at or above the rule's `min_feedback` becomes a reason (the feedback component calls this)."""
    threshold = rules.trigger.min_feedback
    if threshold is None or count < threshold:
        return None
    return Reason("feedback", model_name, model_version, feedback_count=count,
                  explanation=[f"{count} negative feedback record(s) (the rule triggers from {threshold})"])
