"""Events on a policy, and the problems still standing that its Ready and Conflict conditions show.

A failure repeated at every poll is posted once per distinct message, not every time; the ones still
standing (an action that keeps failing, a target another policy holds, drift given up on) make Ready
false or Conflict true until they clear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..api.reasons import Reason
from ..api.spec import PolicySpec
from ..api.status import PolicyStatus, State
from ..engine import Event, set_condition
from ..engine.outcomes import Step
from ..executing import Done, Execution

log = logging.getLogger("stampede")
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""(body, type, reason, message) → posts a Kubernetes event on the policy."""


@dataclass(slots=True)
class Problems:
    """One policy's events and standing problems."""

    namespace: str
    name: str
    emit: EventSink
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Last (reason, message) per problem and action: repeated failures are not re-posted every poll, and the
    ones still standing feed the Ready and Conflict conditions."""

    def event(self, body: Mapping[str, Any], event: Event) -> None:
        self.emit(body, "Warning" if event.warning else "Normal", event.reason, event.message)

    def report(self, body: Mapping[str, Any], key: str, reason: str, message: str) -> None:
        """Post a warning once per distinct message, not at every poll."""
        if self.reported.get(key) == (reason, message):
            return
        self.reported[key] = (reason, message)
        log.warning("%s/%s: %s", self.namespace, self.name, message)
        self.emit(body, "Warning", reason, message)

    def record(self, body: Mapping[str, Any], execution: Execution) -> None:
        """Post the events of every outcome; remember the failures, forget the ones that succeeded since."""
        if execution.held:
            self.reported.pop("finalizer", None)
        for done in execution.done:
            self._outcome(body, done)

    def _outcome(self, body: Mapping[str, Any], done: Done) -> None:
        outcome = done.outcome
        if done.step == Step.HOLD:
            self.report(body, "finalizer", outcome.reason, outcome.message)
        elif done.step == Step.GIVE_UP:
            self.report(body, f"drift/{done.action}", outcome.reason, outcome.message)
        elif outcome.ok:
            if done.step != Step.ADOPT:
                self.reported.pop(f"action/{done.action}", None)
            self.emit(body, "Warning" if outcome.warning else "Normal", outcome.reason, outcome.message)
            for warning in outcome.warnings:
                self.emit(body, "Warning", Reason.ACTION_FAILED, f"Action {done.action}: {warning}.")
        else:
            self.report(body, f"action/{done.action}", outcome.reason, outcome.message)

    def conditions(
        self, spec: PolicySpec, status: PolicyStatus, *, generation: int | None, now: datetime
    ) -> PolicyStatus:
        """Ready and Conflict from the problems still standing, and the poll's bookkeeping fields."""
        if status.state == State.IDLE:  # nothing is being applied or undone: earlier problems are over
            self.reported = {k: v for k, v in self.reported.items() if not k.startswith(("action/", "drift/"))}
        failing = [m for _, (reason, m) in sorted(self.reported.items()) if reason == Reason.ACTION_FAILED]
        if failing:
            conditions = set_condition(
                status.conditions,
                type_="Ready",
                status=False,
                reason=Reason.ACTION_FAILED,
                message=" ".join(failing),
                now=now,
                generation=generation,
            )
        else:
            conditions = set_condition(
                status.conditions,
                type_="Ready",
                status=True,
                reason="Valid",
                message=f"The spec is valid and polled every {spec.poll_interval.total_seconds():g}s.",
                now=now,
                generation=generation,
            )
        conflicts = [m for _, (reason, m) in sorted(self.reported.items()) if reason == Reason.CONFLICT]
        conditions = set_condition(
            conditions,
            type_="Conflict",
            status=bool(conflicts),
            reason=Reason.CONFLICT if conflicts else "NoConflict",
            message=" ".join(conflicts) or "No other writer fights this policy.",
            now=now,
            generation=generation,
        )
        return status.model_copy(
            update={
                "conditions": conditions,
                "observed_generation": generation,
                "template_generation": spec.template_generation,
                "mode": spec.mode.value,
                "last_poll_time": now,
            }
        )


__all__ = ["EventSink", "Problems"]
