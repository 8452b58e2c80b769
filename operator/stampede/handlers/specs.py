"""Where a policy's spec is resolved from its live body, with the operator's settings applied.

The spec is read afresh at every tick (kopf's body is live), validated by the same models `stampede
lint` uses, and checked against the operator's settings (the default Prometheus URL, the allow-list).
A problem is one `InvalidSpec` line naming the field and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api.spec import PolicySpec
from ..api.templates import TemplateProblem
from ..linting import validation_lines
from ..sources.prometheus import check_url_allowed
from . import templates
from .config import OperatorConfig


class InvalidSpec(Exception):
    """The spec cannot be acted on; the message names the field and value."""


def spec_error_text(error: ValidationError) -> str:
    """The same `spec.path: message (got value)` lines `stampede lint` prints, joined on one line."""
    return "; ".join(validation_lines(error, root="spec"))


def resolve_spec(body: Mapping[str, Any], config: OperatorConfig) -> PolicySpec:
    """The spec of a policy body, or InvalidSpec saying why it cannot be acted on."""
    try:
        spec = templates.policy_spec(body)  # rendered from spec.templateRef's template, when it names one
    except TemplateProblem as unrenderable:
        raise InvalidSpec(str(unrenderable)) from None
    except ValidationError as error:
        raise InvalidSpec(spec_error_text(error)) from None
    url = spec.prometheus.url or config.prometheus_url
    if not url:
        raise InvalidSpec("spec.prometheus.url: not set and the operator has no STAMPEDE_PROMETHEUS_URL")
    if config.allowed_prometheus_urls:
        problem = check_url_allowed(url, config.allowed_prometheus_urls)
        if problem:
            raise InvalidSpec(f"spec.prometheus.url: {problem}")
    return spec


__all__ = ["InvalidSpec", "resolve_spec", "spec_error_text"]
