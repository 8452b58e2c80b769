"""A report from the cluster: the policy, its StampedeIncident record, and Prometheus range queries.

Only the API server and Prometheus are read (kubeconfig or in-cluster config, as kubectl would), never
the operator: a report can be written long after the incident, from any machine with access.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import ValidationError

from ..actuators.kube import JSON, Kube, KubeError, load_api_client
from ..actuators.policies import Policies
from ..actuators.records import Records
from ..api.incident import IncidentRecordStatus
from ..api.spec import PolicySpec
from ..api.templates import TemplateDocument, TemplateProblem, render_spec
from ..sources.prometheus import Endpoint, PrometheusSource
from .report import Report, Series, report_window

MAX_POINTS = 2000
"""Enough points for a readable plot of any incident; the step grows with the window."""


class ReportError(Exception):
    """Something the user must fix (no such policy or incident); printed as is."""


def fetch_report(
    *,
    namespace: str,
    policy: str,
    incident: str | None,
    prometheus_url: str | None,
    now: datetime,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> Report:
    """The report of `incident` (default: the latest) of a policy, with its signals' history when readable."""
    kube = Kube(load_api_client(config_file=kubeconfig, context=context))
    policies = Policies(kube)
    try:
        body = policies.read(namespace, policy)
    except KubeError as error:
        raise ReportError(f"StampedePolicy {namespace}/{policy}: {error.message}") from None
    spec = _spec(policies, body, namespace=namespace, policy=policy)
    found = {str((item.get("spec") or {}).get("incident")): item for item in Records(kube).of_policy(namespace, policy)}
    if not found:
        raise ReportError(f"StampedePolicy {namespace}/{policy} has no StampedeIncident records")
    if incident is None:
        incident = max(found, key=lambda i: str((found[i].get("status") or {}).get("startedAt") or ""))
    if incident not in found:
        raise ReportError(
            f"no StampedeIncident for incident {incident!r} of {namespace}/{policy}; have {sorted(found)}"
        )
    try:
        record = IncidentRecordStatus.model_validate(found[incident].get("status") or {})
    except ValidationError as error:
        raise ReportError(f"the record of incident {incident} cannot be read: {error}") from None
    url = prometheus_url or spec.prometheus.url
    series: Series = {}
    note = ""
    if url:
        series, note = _history(spec, record, url=url, now=now)
    else:
        note = "No Prometheus URL (give --prometheus): the plot and near misses lack the signals' history."
    return Report(
        namespace=namespace, policy=policy, incident=incident, spec=spec, record=record, series=series, note=note
    )


def _spec(policies: Policies, body: JSON, *, namespace: str, policy: str) -> PolicySpec:
    """The policy's spec as the operator means it: rendered from its template when it names one."""
    own = body.get("spec") or {}
    ref = own.get("templateRef")
    template = None
    if isinstance(ref, dict):
        try:
            raw = policies.read_template(kind=str(ref.get("kind")), namespace=namespace, name=str(ref.get("name")))
            template = TemplateDocument.model_validate(raw)
        except KubeError as error:
            if error.status != 404:
                raise ReportError(f"{ref.get('kind')} {ref.get('name')}: {error.message}") from None
        except ValidationError as error:
            raise ReportError(f"{ref.get('kind')} {ref.get('name')} is invalid: {error}") from None
    try:
        return render_spec(own, template)
    except (TemplateProblem, ValidationError) as error:
        raise ReportError(f"StampedePolicy {namespace}/{policy} has an invalid spec: {error}") from None


def _history(spec: PolicySpec, record: IncidentRecordStatus, *, url: str, now: datetime) -> tuple[Series, str]:
    start, end = report_window(record, now=now)
    end = min(end, now)
    step = max(spec.poll_interval.total_seconds(), (end - start).total_seconds() / MAX_POINTS, 1.0)

    async def read() -> Series:
        source = PrometheusSource()
        try:
            results = await asyncio.gather(
                *(
                    source.read_range(Endpoint(url=url), s.query, start=start, end=end, step=step, timeout=30.0)
                    for s in spec.signals
                )
            )
        finally:
            source.close()
        return {
            s.name: [(t, reading.value) for t, reading in points]
            for s, points in zip(spec.signals, results, strict=True)
        }

    series = asyncio.run(read())
    if not any(v is not None for points in series.values() for _, v in points):
        return series, f"Prometheus at {url} returned no history for the report window."
    return series, ""
