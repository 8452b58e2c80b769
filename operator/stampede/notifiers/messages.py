"""The runbook's communication templates, as Slack-compatible text.

The runbook asks the on-call to announce a stampede when it is detected, to post mitigation
progress at each phase, to escalate, and to close with the duration and the actions taken. The
operator posts the same four messages, so people reading the channel see what they are used to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    """What every message names: the policy, the incident and where it stands."""

    namespace: str
    policy: str
    incident: str
    severity: str
    phase: str
    mode: str


def _header(emoji: str, title: str, ctx: Context) -> str:
    dry = " (DryRun: nothing is changed)" if ctx.mode == "DryRun" else ""
    return f"{emoji} *{title}* — `{ctx.namespace}/{ctx.policy}`{dry}"


def detected(ctx: Context, *, trigger: str) -> str:
    return "\n".join(
        [
            _header(":rotating_light:", "Cache stampede detected", ctx),
            f"*Incident:* {ctx.incident}   *Severity:* {ctx.severity}",
            f"*Trigger:* {trigger}",
            "*Status:* automatic mitigation started; updates follow at every phase.",
            f"*Follow:* `kubectl describe stp {ctx.policy} -n {ctx.namespace}`",
        ]
    )


def progress(ctx: Context, *, detail: str) -> str:
    return "\n".join(
        [
            _header(":hammer_and_wrench:", "Mitigation progress", ctx),
            f"*Incident:* {ctx.incident}   *Severity:* {ctx.severity}   *Phase:* {ctx.phase}",
            f"*Actions:* {detail}",
        ]
    )


def escalated(ctx: Context, *, reason: str) -> str:
    return "\n".join(
        [
            _header(":mega:", "Incident escalated", ctx),
            f"*Incident:* {ctx.incident}   *Severity:* {ctx.severity}   *Phase:* {ctx.phase}",
            f"*Why:* {reason}",
            "*Needed:* the owning team's on-call to join the incident channel now.",
        ]
    )


def system_wide(ctx: Context, *, detail: str) -> str:
    """The runbook's P0: a stampede affecting all services, announced once per storm."""
    return "\n".join(
        [
            _header(":rotating_light:", "System-wide cache stampede (P0)", ctx),
            f"*Incident:* {ctx.incident}   *Severity:* {ctx.severity}",
            f"*What:* {detail}",
            "*Needed:* incident commander now; shared caches and databases first.",
        ]
    )


def resolved(ctx: Context, *, summary: str, actions: Sequence[str]) -> str:
    taken = ", ".join(actions) if actions else "none"
    return "\n".join(
        [
            _header(":white_check_mark:", "Cache stampede resolved", ctx),
            f"*Incident:* {ctx.incident}   *Max severity:* {ctx.severity}",
            f"*Summary:* {summary}",
            f"*Actions taken (all rolled back):* {taken}",
            "*Next:* post-incident review within 48 hours.",
        ]
    )
